import { randomUUID } from "node:crypto";
import mqtt, { type MqttClient } from "mqtt";
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

export interface DynsecConnection {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password: string;
}

/**
 * The broker's dynamic-security admin API over MQTT. Requests go one message at
 * a time and each waits for its own response (matched by correlation data).
 */
export class DynsecClient {
  private readonly pending = new Map<string, (responses: DynsecResponse[]) => void>();
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly client: MqttClient,
    private readonly timeoutMs: number,
  ) {
    client.on("message", (topic, payload) => {
      if (topic !== RESPONSE_TOPIC) return;
      const parsed = responseSchema.safeParse(JSON.parse(payload.toString("utf8")));
      if (!parsed.success) return;
      const key = parsed.data.responses[0]?.correlationData;
      const resolve = key ? this.pending.get(key) : undefined;
      if (key && resolve) {
        this.pending.delete(key);
        resolve(parsed.data.responses);
      }
    });
  }

  static async connect(
    connection: DynsecConnection,
    options: { timeoutMs?: number } = {},
  ): Promise<DynsecClient> {
    const client = await mqtt.connectAsync({
      host: connection.host,
      port: connection.port,
      username: connection.username,
      password: connection.password,
      clientId: `iot-tenant-operator-${randomUUID()}`,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    });
    await client.subscribeAsync(RESPONSE_TOPIC, { qos: 1 });
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
    await this.client.endAsync();
  }

  private exchange(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> {
    const key = randomUUID();
    const tagged = commands.map((c) => ({ ...c, correlationData: key }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new Error(`dynamic-security: no response within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(key, (responses) => {
        clearTimeout(timer);
        resolve(responses);
      });
      this.client.publish(CONTROL_TOPIC, JSON.stringify({ commands: tagged }), { qos: 1 }, (error) => {
        if (!error) return;
        clearTimeout(timer);
        this.pending.delete(key);
        reject(error);
      });
    });
  }
}
