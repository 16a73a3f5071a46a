import type { BrokerDevice } from "./adapter.js";
import { ownSubtree } from "./desired.js";

/**
 * An MQTT topic or filter as nats-server's MQTT listener converts it to a subject
 * (`mqttToNATSSubjectConversion`): `/` separates tokens as `.` does, a literal `.` becomes `//`,
 * `+` becomes `*` and `#` becomes `>`. Topics under a tenant root never start or end with `/` and
 * have no empty level (topicRootSchema and the Device's topic filters), so the server's escapes for
 * those cases do not arise here.
 */
export function mqttToSubject(topic: string): string {
  return topic
    .split("/")
    .map((level) => (level === "+" ? "*" : level === "#" ? ">" : level.replaceAll(".", "//")))
    .join(".");
}

/**
 * The NATS subjects an MQTT filter needs permission for: a filter ending in `/#` subscribes to the
 * parent level too (`a/#` → `a.>` and `a`), and the server refuses the whole filter unless both are
 * allowed.
 */
export function filterSubjects(filter: string): string[] {
  const subject = mqttToSubject(filter);
  return subject.endsWith(".>") ? [subject, subject.slice(0, -2)] : [subject];
}

/**
 * The allow-list entry of a direction the Device grants nothing in. NATS reads an empty allow-list
 * as "no restriction", and a deny rule would also block the MQTT client's own `$MQTT.` subjects, so
 * an empty grant allows only this subject, which no grant under a tenant root can reach.
 */
export const NOTHING = "$IOT.nothing";

export interface DevicePermissions {
  readonly pub: readonly string[];
  readonly sub: readonly string[];
}

/**
 * Exactly the Device's grant under its tenant root, as allow-lists only (deny rules had four
 * bypass advisories in 2026): `topics` if the Device names any, else its own subtree.
 */
export function devicePermissions(
  device: Pick<BrokerDevice, "topicRoot" | "device" | "topics">,
): DevicePermissions {
  const granted = device.topics ?? {
    publish: [ownSubtree(device.device)],
    subscribe: [ownSubtree(device.device)],
  };
  const subjects = (filters: readonly string[]) => {
    const allowed = new Set(filters.flatMap((f) => filterSubjects(`${device.topicRoot}/${f}`)));
    return allowed.size === 0 ? [NOTHING] : [...allowed].sort();
  };
  return { pub: subjects(granted.publish), sub: subjects(granted.subscribe) };
}

/** True when `next` drops a subject `current` allowed: live connections must then reconnect. */
export function permissionsNarrow(current: DevicePermissions, next: DevicePermissions): boolean {
  const dropped = (a: readonly string[], b: readonly string[]) => a.some((s) => !b.includes(s));
  return dropped(current.pub, next.pub) || dropped(current.sub, next.sub);
}
