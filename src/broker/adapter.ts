/**
 * The broker seen by the Device and Tenant reconcilers. Mosquitto with dynamic security implements
 * it first (mosquitto-dynsec.ts); NATS with accounts (tenant = account, device = user JWT) can
 * implement the same contract: state in, convergence out, orphans deleted on a full resync.
 */

/** How the device proves its identity to the broker. */
export type DeviceCredentials =
  /** `username` is the certificate subject as the broker derives it (see subjectUsername). */
  | { readonly type: "x509"; readonly username: string }
  | { readonly type: "password"; readonly username: string; readonly password: string };

/** Topic filters relative to the tenant's topic root, as in Device `spec.topics`. */
export interface DeviceTopics {
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
}

/** Everything the broker needs to know about one device. */
export interface BrokerDevice {
  readonly tenant: string;
  readonly device: string;
  readonly topicRoot: string;
  readonly credentials: DeviceCredentials;
  /** Grants on top of the device's own subtree `devices/<device>/#`. */
  readonly topics?: DeviceTopics;
  /** Device `spec.enabled`. */
  readonly enabled: boolean;
  /**
   * Tenant `spec.suspended`. A backend may cut a whole tenant off at once (Mosquitto: the tenant's
   * gate), so the first device that reports a change of it may change every device of the tenant.
   */
  readonly suspended: boolean;
}

export interface DeviceRef {
  readonly tenant: string;
  readonly device: string;
}

/** A tenant's place on the broker. */
export interface TenantRef {
  readonly tenant: string;
  readonly topicRoot: string;
}

/**
 * Whether the adapter reaches the broker and has read its state. False means an outage: every
 * device's `BrokerSynced` is False with reason BrokerError. While true, each device's own
 * applyDevice result decides its condition.
 */
export type BrokerStatus =
  | { readonly synced: true }
  | { readonly synced: false; readonly reason: "BrokerError"; readonly message: string };

export interface SyncReport {
  /** Mutating commands sent to the broker during the sync. */
  readonly commands: number;
  /** Devices present in the broker that the desired set no longer has, now deleted. */
  readonly orphansDeleted: number;
  readonly durationMs: number;
}

export interface BrokerAdapter {
  /**
   * Replaces the desired set with `devices` (every device of every tenant) and converges the broker
   * to it, deleting the operator's entries that are not in it. Call at start; the adapter repeats
   * it by itself periodically and after every reconnect. Given a function, it asks it for the
   * current set each time (an operator passes its caches, so a device gone meanwhile goes from the
   * broker too); given a list, it reuses that list.
   */
  syncAll(devices: readonly BrokerDevice[] | (() => readonly BrokerDevice[])): Promise<SyncReport>;
  /** Makes one device's broker state match; resolves when the broker holds it. Idempotent. */
  applyDevice(device: BrokerDevice): Promise<void>;
  /**
   * Removes the device from the broker: its live connection is dropped and what the broker keeps
   * for its identity (an MQTT session, queued messages) is discarded. Idempotent.
   */
  removeDevice(ref: DeviceRef): Promise<void>;
  /**
   * A tenant is being deleted: cuts every one of its devices off at once (a bounded number of broker
   * changes, whatever the tenant's size), then removes each device and the tenant's own broker state.
   * Resolves when the broker holds nothing of the tenant's devices. Idempotent.
   */
  removeTenant(ref: Pick<TenantRef, "tenant">): Promise<void>;
  /**
   * Deletes what the broker keeps under a deleted tenant's topic root beyond its devices (retained
   * messages), so nothing of it reaches a later tenant given the same root. Call after every device
   * of the tenant is removed. Idempotent.
   */
  purgeTenant(ref: TenantRef): Promise<void>;
  status(): BrokerStatus;
  /**
   * Resolves once the adapter has first reached the broker and read its state, or failed to;
   * status() then says which. An operator starts its reconcilers after it, so a restart does not
   * report every tenant's broker as unreachable for the moment it takes to connect.
   */
  firstStatus(): Promise<BrokerStatus>;
  /** Called on every change of status(); returns the unsubscribe function. */
  onStatusChange(listener: (status: BrokerStatus) => void): () => void;
  close(): Promise<void>;
}
