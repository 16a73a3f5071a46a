import { randomUUID } from "node:crypto";
import mqtt, { type MqttClient } from "mqtt";
import { adminClientOptions, type DynsecConnection } from "./dynsec-client.js";

/**
 * What the admin does on the broker as an ordinary MQTT client, outside the dynamic-security API:
 * discarding a session and clearing retained messages. Both go through the admin listener, which
 * alone lets a client choose its client id (the device listeners pin it to the username).
 */

/** Passes over a topic root before giving up: each pass sees every retained message the broker could queue. */
const MAX_PASSES = 20;
const MARKER_TIMEOUT_MS = 10_000;

/**
 * Discards the MQTT session of `clientId` (subscriptions, queued messages): a clean-start connection
 * under that id takes the session over and ends it. A live connection of that id is dropped.
 */
export async function discardSession(connection: DynsecConnection, clientId: string): Promise<void> {
  const session = await mqtt.connectAsync(
    await adminClientOptions(connection, { clientId, clean: true, protocolVersion: 4 }),
  );
  await session.endAsync();
}

/**
 * Clears every retained message under `topicRoot` (publishes an empty retained message to each
 * topic found) until a pass finds none; returns how many it cleared.
 */
export async function clearRetained(connection: DynsecConnection, topicRoot: string): Promise<number> {
  const client = await mqtt.connectAsync(await adminClientOptions(connection));
  try {
    let cleared = 0;
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      const topics = await retainedTopics(client, `${topicRoot}/#`);
      if (topics.length === 0) return cleared;
      for (const topic of topics) await client.publishAsync(topic, "", { qos: 1, retain: true });
      cleared += topics.length;
    }
    throw new Error(`retained messages under ${topicRoot} still present after ${MAX_PASSES} passes`);
  } finally {
    await client.endAsync();
  }
}

/**
 * The topics of retained messages matching `filter`. The broker sends them right after the SUBACK;
 * a marker published afterwards arrives after them, so its arrival ends the pass. The broker may
 * drop retained messages beyond its queue bound: those show up in the next pass.
 */
async function retainedTopics(client: MqttClient, filter: string): Promise<string[]> {
  const marker = `iot-tenant-operator/purge/${randomUUID()}`;
  const topics = new Set<string>();
  let onMessage: (topic: string, payload: Buffer, packet: { retain: boolean }) => void = () => undefined;
  const markerSeen = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), MARKER_TIMEOUT_MS);
    onMessage = (topic, _payload, packet) => {
      if (topic === marker) {
        clearTimeout(timer);
        resolve(true);
      } else if (packet.retain) topics.add(topic);
    };
  });
  client.on("message", onMessage);
  try {
    await client.subscribeAsync(marker, { qos: 1 });
    await client.subscribeAsync(filter, { qos: 0 });
    await client.publishAsync(marker, "", { qos: 1 });
    const complete = await markerSeen;
    if (!complete && topics.size === 0) throw new Error(`no answer from the broker while listing ${filter}`);
    return [...topics];
  } finally {
    client.off("message", onMessage);
    await client.unsubscribeAsync([filter, marker]);
  }
}

/**
 * Receives what the broker publishes on `filters` (its own log, see log-events.ts; devices' tamper
 * reports, see tamper-report.ts) on a connection of its own that reconnects and re-subscribes by
 * itself; `close` ends it.
 */
export async function watchTopics(
  connection: DynsecConnection,
  filters: readonly string[],
  onMessage: (message: { topic: string; payload: Buffer; retained: boolean }) => void,
  onError: (error: Error) => void,
): Promise<{ close(): Promise<void> }> {
  const client = mqtt.connect(await adminClientOptions(connection, { reconnectPeriod: 1_000 }));
  client.on("connect", () => {
    client.subscribe([...filters], { qos: 0 }, (error) => error && onError(error));
  });
  client.on("message", (topic, payload, packet) => onMessage({ topic, payload, retained: packet.retain }));
  client.on("error", onError);
  return { close: () => client.endAsync() };
}
