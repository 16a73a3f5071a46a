import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { z } from "zod";

const CONTROL_TOPIC = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC = `${CONTROL_TOPIC}/response`;

/** One dynamic-security command, e.g. `{ command: "createRole", rolename: "r" }`. */
export type DynsecCommand = { command: string } & Record<string, unknown>;

const responseSchema = z.object({
  responses: z.array(
    z.object({
      command: z.string(),
      error: z.string().optional(),
      data: z.unknown().optional(),
      correlationData: z.string().optional(),
    }),
  ),
});
export type DynsecResponse = z.infer<typeof responseSchema>["responses"][number];

export class DynsecCommandError extends Error {
  constructor(
    readonly command: string,
    readonly reason: string,
  ) {
    super(`dynamic-security ${command}: ${reason}`);
  }
}

/** The admin connection to the broker is gone; every pending and later request fails with this. */
export class BrokerConnectionLost extends Error {
  constructor() {
    super("dynamic-security: connection to the broker lost");
  }
}

/**
 * Where and as whom the operator reaches the broker's admin listener. The admin proves itself with a
 * client certificate from a CA that only the admin listener trusts, and the broker takes the
 * certificate's CN as the dynsec username: the admin account has no password, so no device-facing
 * listener can ever log it in. Files are read on every connect, so a renewed certificate is picked up.
 */
export interface DynsecConnection {
  readonly host: string;
  readonly port: number;
  /** Verifies the broker's server certificate. */
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Passphrase of an encrypted keyFile. */
  readonly passphrase?: string;
}

/** MQTT options for an admin connection; `extra` may set e.g. the client id and session flags. */
export async function adminClientOptions(
  connection: DynsecConnection,
  extra: IClientOptions = {},
): Promise<IClientOptions> {
  const [ca, cert, key] = await Promise.all(
    [connection.caFile, connection.certFile, connection.keyFile].map((file) => readFile(file)),
  );
  return {
    protocol: "mqtts",
    host: connection.host,
    port: connection.port,
    ca,
    cert,
    key,
    ...(connection.passphrase ? { passphrase: connection.passphrase } : {}),
    clientId: `iot-tenant-operator-${randomUUID()}`,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...extra,
  };
}

/**
 * The broker's dynamic-security admin API over MQTT. Requests go one message at
 * a time and each waits for its own response (matched by correlation data).
 */
export class DynsecClient {
  private readonly pending = new Map<
    string,
    { resolve: (responses: DynsecResponse[]) => void; reject: (error: Error) => void }
  >();
  private readonly closeListeners = new Set<() => void>();
  private queue: Promise<unknown> = Promise.resolve();
  private lost = false;

  private constructor(
    private readonly client: MqttClient,
    private readonly timeoutMs: number,
  ) {
    client.on("message", (topic, payload) => {
      if (topic !== RESPONSE_TOPIC) return;
      const parsed = responseSchema.safeParse(parseJson(payload.toString("utf8")));
      if (!parsed.success) return;
      const key = parsed.data.responses[0]?.correlationData;
      const waiter = key ? this.pending.get(key) : undefined;
      if (key && waiter) {
        this.pending.delete(key);
        waiter.resolve(parsed.data.responses);
      }
    });
    client.on("close", () => {
      if (this.lost) return;
      this.lost = true;
      for (const waiter of this.pending.values()) waiter.reject(new BrokerConnectionLost());
      this.pending.clear();
      for (const listener of this.closeListeners) listener();
    });
  }

  /** False once the connection has ended; the client does not reconnect by itself. */
  get connected(): boolean {
    return !this.lost;
  }

  /** Calls `listener` once when the connection ends, whoever ended it. */
  onClose(listener: () => void): void {
    if (this.lost) listener();
    else this.closeListeners.add(listener);
  }

  static async connect(
    connection: DynsecConnection,
    options: { timeoutMs?: number } = {},
  ): Promise<DynsecClient> {
    const client = await mqtt.connectAsync(await adminClientOptions(connection));
    // QoS 0 both ways: with QoS 1 the broker writes PUBACK and response as two small segments, and
    // Nagle's algorithm on its socket holds the second for the client's delayed ACK (~40 ms per command).
    // Over one loopback TCP connection nothing is lost while it lasts; a lost connection fails every
    // pending request, and the adapter re-reads the broker before it writes again.
    await client.subscribeAsync(RESPONSE_TOPIC, { qos: 0 });
    return new DynsecClient(client, options.timeoutMs ?? 10_000);
  }

  /** Sends the commands in one message; resolves with one response per command, in order. */
  send(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> {
    const next = this.queue.then(() => this.exchange(commands));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Sends one command and throws a DynsecCommandError if the broker refused it. */
  async run(command: DynsecCommand): Promise<unknown> {
    const [response] = await this.send([command]);
    if (!response) throw new DynsecCommandError(command.command, "no response");
    if (response.error) throw new DynsecCommandError(command.command, response.error);
    return response.data;
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }

  private exchange(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> {
    const key = randomUUID();
    const tagged = commands.map((c) => ({ ...c, correlationData: key }));
    return new Promise((resolve, reject) => {
      if (this.lost) {
        reject(new BrokerConnectionLost());
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new Error(`dynamic-security: no response within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(key, {
        resolve: (responses) => {
          clearTimeout(timer);
          resolve(responses);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.client.publish(CONTROL_TOPIC, JSON.stringify({ commands: tagged }), { qos: 0 }, (error) => {
        if (!error) return;
        clearTimeout(timer);
        this.pending.delete(key);
        reject(error);
      });
    });
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const PAGE_SIZE = 500;

/**
 * Reads a whole dynsec list (`listClients`, `listRoles` or `listGroups`, verbose) in pages: one verbose list of
 * 6,000 devices stalled the broker for about 160 ms, a page of 500 for a fraction of that.
 * `afterPage` gets each page's duration, e.g. to pause as long (pacing).
 */
export async function readPaged<T>(
  client: DynsecClient,
  command: "listClients" | "listRoles" | "listGroups",
  page: (data: unknown) => { readonly totalCount: number; readonly items: readonly T[] },
  afterPage: (durationMs: number) => Promise<void> = async () => undefined,
): Promise<T[]> {
  const all: T[] = [];
  for (;;) {
    const started = performance.now();
    const { totalCount, items } = page(
      await client.run({ command, verbose: true, count: PAGE_SIZE, offset: all.length }),
    );
    await afterPage(performance.now() - started);
    all.push(...items);
    if (items.length === 0 || all.length >= totalCount) return all;
  }
}
