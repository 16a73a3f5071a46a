import { setTimeout as sleep } from "node:timers/promises";
import type { MqttClient } from "mqtt";

/** An ordinary client publishing to its own topic and waiting for the message back, over and over, until stopped. */
export class RoundTripProbe {
  private readonly samples: Array<{ at: number; ms: number }> = [];
  private running = true;
  private readonly done: Promise<void>;

  private constructor(
    private readonly client: MqttClient,
    private readonly topic: string,
  ) {
    this.done = this.loop();
  }

  /** Subscribes `client` (connected, allowed to publish and subscribe `topic`) and starts probing. */
  static async start(client: MqttClient, topic: string): Promise<RoundTripProbe> {
    await client.subscribeAsync(topic, { qos: 0 });
    return new RoundTripProbe(client, topic);
  }

  /** Round trips in flight at some point within [from, to): a window shorter than one round trip still has one. */
  between(from: number, to: number): number[] {
    return this.samples.filter((s) => s.at < to && s.at + s.ms >= from).map((s) => s.ms);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
    await this.client.endAsync();
  }

  private async loop(): Promise<void> {
    let sequence = 0;
    while (this.running) {
      const id = String(++sequence);
      const at = performance.now();
      const back = new Promise<void>((resolve) => {
        const onMessage = (_topic: string, payload: Buffer) => {
          if (payload.toString() !== id) return;
          this.client.off("message", onMessage);
          resolve();
        };
        this.client.on("message", onMessage);
      });
      this.client.publish(this.topic, id, { qos: 0 });
      // A lost message counts as a 10 s round trip rather than stalling the probe.
      await Promise.race([back, sleep(10_000, undefined, { ref: false })]);
      this.samples.push({ at, ms: performance.now() - at });
      await sleep(10);
    }
  }
}
