import { Resource } from "../controllers/resources.js";
import type { Logger } from "../observability/logger.js";
import type { Clock } from "../runtime/clock.js";
import { KubeApiError, type KubeClient } from "../runtime/kube-client.js";
import { parseObjectKey } from "../runtime/kube-object.js";
import { Coalescer } from "./coalesce.js";

/** The Device status field presence owns; the Device controller leaves it alone. */
export const PRESENCE_FIELD = "presence";

/**
 * The bound on presence writes: at most one status write per Device every `intervalMs`, and at most
 * `writesPerSecond` over all Devices. A reconnect storm of N devices becomes min(N, 10/s) writes,
 * each carrying the device's latest state.
 */
export const PRESENCE_LIMITS = { intervalMs: 30_000, writesPerSecond: 10, maxKeys: 100_000 } as const;

export interface Presence {
  readonly connected: boolean;
  readonly lastSeen: string;
  readonly remoteAddress?: string;
}

/** Writes `status.presence` of Devices from the broker's connect/disconnect events, coalesced. */
export class PresenceWriter {
  private readonly pending = new Coalescer<Presence>(PRESENCE_LIMITS);

  constructor(
    private readonly client: KubeClient,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  /** `device` is `namespace/name`. */
  observe(device: string, presence: Presence): void {
    this.pending.offer(device, presence, this.clock.now());
  }

  takeDropped(): number {
    return this.pending.takeDropped();
  }

  /** Writes what is due, within the bounds. */
  async tick(): Promise<void> {
    for (const { key, value } of this.pending.take(this.clock.now())) {
      const { namespace, name } = parseObjectKey(key);
      try {
        await this.client.mergePatch(
          Resource.device,
          { ...(namespace ? { namespace } : {}), name, subresource: "status" },
          { status: { [PRESENCE_FIELD]: value } },
        );
      } catch (error) {
        if (!(error instanceof KubeApiError && error.code === 404))
          this.logger.warn({ err: error, device: key }, "presence not written");
      }
    }
  }
}
