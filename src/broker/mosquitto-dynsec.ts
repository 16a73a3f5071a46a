import { setTimeout as sleep, setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { Logger } from "pino";
import { z } from "zod";
import type {
  BrokerAdapter,
  BrokerDevice,
  BrokerStatus,
  DeviceRef,
  SyncReport,
  TenantRef,
} from "./adapter.js";
import { clearRetained, discardSession } from "./admin-session.js";
import {
  type DesiredDevice,
  type DesiredGate,
  desiredDevice,
  desiredGate,
  gateName,
  gateTenant,
  ownerName,
  ownerRef,
} from "./desired.js";
import {
  BrokerConnectionLost,
  DynsecClient,
  type DynsecCommand,
  type DynsecConnection,
  readPaged,
} from "./dynsec-client.js";
import {
  gateCutsOff,
  gateObservationOf,
  isCutOff,
  NO_GATE,
  NOTHING_OBSERVED,
  type ObservedClient,
  type ObservedDevice,
  type ObservedGate,
  observationOf,
  owedAfterPause,
  pauseAfter,
  planDefaultAccess,
  planDevice,
  planGate,
  sessionsToDiscard,
} from "./plan.js";

export const DEFAULT_OWNER_PREFIX = "iot:";

export interface CommandEvent {
  readonly command: string;
  readonly owner: string;
  readonly durationMs: number;
  readonly error?: string;
}

/** What the adapter was doing when a cut-off was asked for: what the cut-off had to wait out. */
export type AdapterActivity = "idle" | "command" | "pause" | "read";

/**
 * One cut-off through the adapter, as epoch milliseconds: asked for, its first command sent (what
 * kicks the live connection), and that command answered.
 */
export interface CutOffEvent {
  readonly owner: string;
  readonly requestedAt: number;
  readonly sentAt: number;
  readonly ackedAt: number;
  readonly behind: AdapterActivity;
}

export interface MosquittoDynsecOptions {
  readonly connection: DynsecConnection;
  /** The adapter owns exactly the roles, and clients by textname, that start with this; nothing else is touched. */
  readonly ownerPrefix?: string;
  /** Pause after each change = pacing × that change's duration: 1 keeps the broker busy at most half the time; 0 is unpaced. */
  readonly pacing?: number;
  readonly resyncIntervalMs?: number;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly commandTimeoutMs?: number;
  readonly logger?: Logger;
  /** Observes every mutating command (benchmarks, metrics). */
  readonly onCommand?: (event: CommandEvent) => void;
  /** Observes every cut-off's first command (metrics); each is also logged at info. */
  readonly onCutOff?: (event: CutOffEvent) => void;
}

/** Wall-clock milliseconds with the monotonic clock's resolution, comparable across processes. */
const epochNow = () => performance.timeOrigin + performance.now();

/** The broker refused a change for a reason that retrying will not fix, e.g. a username held by a foreign client. */
export class BrokerConflictError extends Error {}

/** The broker cannot be reached; the adapter retries by itself and converges once it is back. */
export class BrokerUnavailableError extends Error {}

const aclSchema = z.object({
  acltype: z.string(),
  topic: z.string(),
  priority: z.number().int(),
  allow: z.boolean(),
});
const roleSchema = z.object({ rolename: z.string(), acls: z.array(aclSchema) });
const clientSchema = z.object({
  username: z.string(),
  textname: z.string().optional(),
  textdescription: z.string().optional(),
  roles: z.array(z.object({ rolename: z.string() })).default([]),
  groups: z.array(z.object({ groupname: z.string() })).default([]),
});
const groupSchema = z.object({
  groupname: z.string(),
  roles: z.array(z.object({ rolename: z.string() })).default([]),
});
const listGroupsSchema = z.object({ totalCount: z.number().int(), groups: z.array(groupSchema) });
const getGroupSchema = z.object({ group: groupSchema });
const listRolesSchema = z.object({ totalCount: z.number().int(), roles: z.array(roleSchema) });
const listClientsSchema = z.object({ totalCount: z.number().int(), clients: z.array(clientSchema) });
const getRoleSchema = z.object({ role: roleSchema });
const getClientSchema = z.object({ client: clientSchema });
export const defaultAccessSchema = z.object({
  acls: z.array(z.object({ acltype: z.string(), allow: z.boolean() })),
});

/** Every dynsec role, read in pages; `afterPage` may pause between them (pacing). */
export function listAllRoles(client: DynsecClient, afterPage?: (durationMs: number) => Promise<void>) {
  return readPaged(
    client,
    "listRoles",
    (data) => {
      const page = listRolesSchema.parse(data);
      return { totalCount: page.totalCount, items: page.roles };
    },
    afterPage,
  );
}

/** Every dynsec group, read in pages; `afterPage` may pause between them (pacing). */
export function listAllGroups(client: DynsecClient, afterPage?: (durationMs: number) => Promise<void>) {
  return readPaged(
    client,
    "listGroups",
    (data) => {
      const page = listGroupsSchema.parse(data);
      return { totalCount: page.totalCount, items: page.groups };
    },
    afterPage,
  );
}

/** Every dynsec client, read in pages; `afterPage` may pause between them (pacing). */
export function listAllClients(client: DynsecClient, afterPage?: (durationMs: number) => Promise<void>) {
  return readPaged(
    client,
    "listClients",
    (data) => {
      const page = listClientsSchema.parse(data);
      return { totalCount: page.totalCount, items: page.clients };
    },
    afterPage,
  );
}

const NOT_FOUND = /not found/i;
const MUTATING = new Set([
  "createRole",
  "modifyRole",
  "deleteRole",
  "createClient",
  "deleteClient",
  "addClientRole",
  "removeClientRole",
  "createGroup",
  "deleteGroup",
  "addGroupRole",
  "removeGroupRole",
  "addGroupClient",
  "removeGroupClient",
]);
const ATTEMPTS_PER_DEVICE = 3;

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

function toObservedClient(client: z.infer<typeof clientSchema>): ObservedClient {
  return {
    username: client.username,
    ...(client.textname !== undefined ? { textname: client.textname } : {}),
    ...(client.textdescription !== undefined ? { textdescription: client.textdescription } : {}),
    roles: client.roles.map((role) => role.rolename),
    groups: client.groups.map((group) => group.groupname),
  };
}

/**
 * Mosquitto 2.0.x dynamic security as the broker behind the operator. One writer owns the admin
 * connection: it diffs desired against observed state per device and sends one command per message,
 * pausing after each, because every 2.0.x change rewrites the whole state file and stalls the broker.
 * Cut-offs jump the queue. Each tenant has a gate (a role above every device role and a group of
 * its clients), so suspending or deleting a tenant cuts all its devices off in two commands.
 * See README.md for why and for the measured limits.
 */
export class MosquittoDynsecAdapter implements BrokerAdapter {
  private readonly prefix: string;
  private readonly pacing: number;
  private readonly resyncIntervalMs: number;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  /** null: the device must be removed. Absent: unknown, left alone until a complete set arrives, else an orphan. */
  private readonly desired = new Map<string, DesiredDevice | null>();
  /** Until syncAll the desired set is incomplete: only what applyDevice and removeDevice named is decided. */
  private complete = false;
  /** Asked for the complete desired set at every full resync, when syncAll was given a function. */
  private everyDevice: (() => readonly BrokerDevice[]) | undefined;
  private observed = new Map<string, ObservedDevice>();
  /** Tenant gates by name, as `desired`: null means remove once the tenant has no client left. */
  private readonly gates = new Map<string, DesiredGate | null>();
  private observedGates = new Map<string, ObservedGate>();
  /** Devices and gates whose broker state may differ from the desired one. */
  private readonly dirty = new Set<string>();
  /** The dirty devices whose plan cuts access; a subset of `dirty`, served first. */
  private readonly cutOffs = new Set<string>();
  /** When each pending cut-off was asked for and what the adapter was doing then (tracing only). */
  private readonly cutOffRequests = new Map<string, { at: number; behind: AdapterActivity }>();
  private activity: AdapterActivity = "idle";
  /** Pause time a cut-off deferred: added to the next pause. */
  private owedPauseMs = 0;
  /** Ends a deferrable pause early: a cut-off arrived. */
  private interruptPause: () => void = () => undefined;
  /** Devices and gates whose commands a cut-off interrupted: re-read before they are planned again. */
  private readonly interrupted = new Set<string>();
  private readonly waiters = new Map<string, Waiter[]>();
  private syncWaiters: Array<{ resolve: (report: SyncReport) => void; reject: (error: Error) => void }> = [];
  private readonly statusListeners = new Set<(status: BrokerStatus) => void>();
  private current: BrokerStatus = { synced: false, reason: "BrokerError", message: "not connected yet" };
  private reportFirstStatus: (status: BrokerStatus) => void = () => undefined;
  private readonly first = new Promise<BrokerStatus>((resolve) => {
    this.reportFirstStatus = resolve;
  });
  private client: DynsecClient | undefined;
  private observeAllNeeded = true;
  /** The last connection attempt or exchange failed; requests fail fast until the adapter is back. */
  private unreachable = false;
  private nextResyncAt = 0;
  private round = { commands: 0, orphansDeleted: 0, startedAt: performance.now() };
  private closed = false;
  private wake: () => void = () => undefined;
  private readonly loop: Promise<void>;

  constructor(private readonly options: MosquittoDynsecOptions) {
    this.prefix = options.ownerPrefix ?? DEFAULT_OWNER_PREFIX;
    this.pacing = options.pacing ?? 1;
    this.resyncIntervalMs = options.resyncIntervalMs ?? 300_000;
    this.backoff = options.backoff ?? { initialMs: 200, maxMs: 10_000 };
    this.loop = this.run();
  }

  syncAll(devices: readonly BrokerDevice[] | (() => readonly BrokerDevice[])): Promise<SyncReport> {
    this.complete = true;
    if (typeof devices === "function") this.everyDevice = devices;
    else {
      // A list is the complete set now; later applyDevice and removeDevice calls change it.
      this.everyDevice = undefined;
      this.replaceDesired(devices);
    }
    this.observeAllNeeded = true;
    const done = new Promise<SyncReport>((resolve, reject) => this.syncWaiters.push({ resolve, reject }));
    this.wake();
    return done;
  }

  applyDevice(device: BrokerDevice): Promise<void> {
    const gate = desiredGate(this.prefix, device);
    // The first device to say its tenant is (no longer) suspended flips the gate for all of them.
    if (this.gates.get(gate.name)?.suspended !== gate.suspended) {
      this.gates.set(gate.name, gate);
      this.markDirty(gate.name);
    }
    const desired = desiredDevice(this.prefix, device);
    return this.want(desired.owner, desired);
  }

  removeDevice(ref: DeviceRef): Promise<void> {
    return this.want(ownerName(this.prefix, ref.tenant, ref.device), null);
  }

  async removeTenant(ref: Pick<TenantRef, "tenant">): Promise<void> {
    const gate = gateName(this.prefix, ref.tenant);
    await this.wantGate(gate, { name: gate, suspended: true });
    const owners = new Set(
      [...this.desired.keys(), ...this.observed.keys()].filter(
        (owner) => ownerRef(this.prefix, owner)?.tenant === ref.tenant,
      ),
    );
    await Promise.all([...owners].map((owner) => this.want(owner, null)));
    await this.wantGate(gate, null);
  }

  async purgeTenant(ref: TenantRef): Promise<void> {
    const cleared = await clearRetained(this.options.connection, ref.topicRoot);
    this.options.logger?.info(
      { tenant: ref.tenant, topicRoot: ref.topicRoot, cleared },
      "cleared the retained messages of a deleted tenant",
    );
  }

  status(): BrokerStatus {
    return this.current;
  }

  firstStatus(): Promise<BrokerStatus> {
    return this.first;
  }

  onStatusChange(listener: (status: BrokerStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake();
    await this.loop;
    await this.client?.close();
    this.client = undefined;
    this.failAll(new BrokerUnavailableError("broker adapter closed"));
  }

  private want(owner: string, desired: DesiredDevice | null): Promise<void> {
    this.desired.set(owner, desired);
    if (desired && this.holds(owner, desired)) return Promise.resolve();
    return this.waitFor(owner);
  }

  /**
   * The broker already holds exactly `desired` as last read or written, and nothing about the device
   * is pending: answered at once rather than behind every queued device (a restart re-applies each).
   */
  private holds(owner: string, desired: DesiredDevice): boolean {
    return (
      this.current.synced &&
      !this.observeAllNeeded &&
      !this.dirty.has(owner) &&
      !this.dirty.has(desired.gate) &&
      planDevice(desired, this.observed.get(owner) ?? NOTHING_OBSERVED).length === 0
    );
  }

  private wantGate(name: string, desired: DesiredGate | null): Promise<void> {
    this.gates.set(name, desired);
    return this.waitFor(name);
  }

  /** Marks a device or gate dirty and resolves once the broker holds its desired state. */
  private waitFor(name: string): Promise<void> {
    this.markDirty(name);
    const done = new Promise<void>((resolve, reject) => {
      const list = this.waiters.get(name) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(name, list);
    });
    if (this.unreachable && !this.current.synced)
      this.settle(name, new BrokerUnavailableError(this.current.message));
    this.wake();
    return done;
  }

  /** Listeners hear flips of `synced`; the message of an ongoing outage is read with status(). */
  private setStatus(status: BrokerStatus): void {
    const flipped = status.synced !== this.current.synced;
    this.current = status;
    this.reportFirstStatus(status);
    if (flipped) for (const listener of this.statusListeners) listener(status);
  }

  private settle(owner: string, error?: Error): void {
    const list = this.waiters.get(owner);
    this.waiters.delete(owner);
    for (const waiter of list ?? []) {
      if (error) waiter.reject(error);
      else waiter.resolve();
    }
  }

  private failAll(error: Error): void {
    for (const owner of [...this.waiters.keys()]) this.settle(owner, error);
    for (const waiter of this.syncWaiters) waiter.reject(error);
    this.syncWaiters = [];
  }

  private async run(): Promise<void> {
    let delay = this.backoff.initialMs;
    while (!this.closed) {
      try {
        const client = await this.connected();
        if (this.observeAllNeeded || performance.now() >= this.nextResyncAt) {
          this.activity = "read";
          await this.observeAll(client);
          // Readable again: devices converge from here on, one by one, each reporting for itself.
          this.setStatus({ synced: true });
        }
        const owner = this.nextDirty();
        if (owner === undefined) {
          this.finishRound();
          this.activity = "idle";
          await this.idle();
          continue;
        }
        await this.converge(client, owner);
        // A resync walks every device; without a macrotask turn in between, sockets would wait for all of them.
        await yieldToEventLoop();
        delay = this.backoff.initialMs;
      } catch (error) {
        if (this.closed) return;
        const message = error instanceof Error ? error.message : String(error);
        this.options.logger?.warn({ err: message, retryInMs: delay }, "broker unreachable; reconnecting");
        await this.client?.close().catch(() => undefined);
        this.client = undefined;
        this.unreachable = true;
        this.observeAllNeeded = true;
        this.setStatus({ synced: false, reason: "BrokerError", message });
        this.failAll(new BrokerUnavailableError(message));
        await Promise.race([
          sleep(delay * (0.5 + Math.random() / 2), undefined, { ref: false }),
          new Promise<void>((r) => (this.wake = r)),
        ]);
        delay = Math.min(delay * 2, this.backoff.maxMs);
      }
    }
  }

  private async connected(): Promise<DynsecClient> {
    if (this.client?.connected) return this.client;
    if (this.client) throw new BrokerConnectionLost();
    const client = await DynsecClient.connect(this.options.connection, {
      timeoutMs: this.options.commandTimeoutMs ?? 10_000,
    });
    client.onClose(() => {
      if (this.client === client) this.wake();
    });
    this.client = client;
    this.unreachable = false;
    this.options.logger?.info("connected to the broker's dynamic-security API");
    return client;
  }

  private idle(): Promise<void> {
    const untilResync = Math.max(0, this.nextResyncAt - performance.now());
    // Unreferenced: a waiting adapter must not keep a process alive that has nothing else to do.
    return Promise.race([
      sleep(untilResync, undefined, { ref: false }),
      new Promise<void>((resolve) => (this.wake = resolve)),
    ]);
  }

  /** Cut-offs first, so that a device losing access never waits behind others gaining it. */
  private nextDirty(): string | undefined {
    for (const owner of this.cutOffs) return owner;
    for (const owner of this.dirty) return owner;
    return undefined;
  }

  private markDirty(name: string): void {
    this.dirty.add(name);
    const cutOff = this.isGate(name)
      ? gateCutsOff(this.gateTarget(name), this.observedGates.get(name) ?? NO_GATE)
      : isCutOff(this.desiredOf(name), this.observed.get(name) ?? NOTHING_OBSERVED);
    if (cutOff) {
      this.cutOffs.add(name);
      if (!this.cutOffRequests.has(name))
        this.cutOffRequests.set(name, { at: epochNow(), behind: this.activity });
      this.interruptPause();
    } else {
      this.cutOffs.delete(name);
      this.cutOffRequests.delete(name);
    }
  }

  private isGate(name: string): boolean {
    return gateTenant(this.prefix, name) !== undefined;
  }

  /**
   * What the gate must be now: as desired, or, when it is not wanted, closed while any client of
   * its tenant is left in the broker (an orphan device must not regain its own role's grants) and
   * gone after the last one.
   */
  private gateTarget(name: string): DesiredGate | undefined {
    const desired = this.gates.get(name);
    if (desired) return desired;
    const members = `${name}:`;
    for (const [owner, found] of this.observed)
      if (owner.startsWith(members) && found.clients.length > 0) return { name, suspended: true };
    return undefined;
  }

  private markClean(owner: string): void {
    this.dirty.delete(owner);
    this.cutOffs.delete(owner);
    this.cutOffRequests.delete(owner);
  }

  private desiredOf(owner: string): DesiredDevice | undefined {
    return this.desired.get(owner) ?? undefined;
  }

  /** Whether the adapter may decide about a device or gate: it is desired, removed, or the desired set is complete. */
  private decides(name: string, complete = this.complete): boolean {
    return this.desired.has(name) || this.gates.has(name) || complete;
  }

  /** Requests still waiting for the broker keep what they asked for; the rest becomes `devices`. */
  private replaceDesired(devices: readonly BrokerDevice[]): void {
    const waiting = [...this.waiters.keys()].map(
      (name) => [name, this.desired.get(name), this.gates.get(name)] as const,
    );
    this.desired.clear();
    this.gates.clear();
    for (const device of devices) {
      const desired = desiredDevice(this.prefix, device);
      this.desired.set(desired.owner, desired);
      this.gates.set(desired.gate, desiredGate(this.prefix, device));
    }
    for (const [name, desired, gate] of waiting) {
      if (desired !== undefined) this.desired.set(name, desired);
      if (gate !== undefined) this.gates.set(name, gate);
    }
  }

  private finishRound(): void {
    if (this.syncWaiters.length === 0) return;
    const report: SyncReport = {
      commands: this.round.commands,
      orphansDeleted: this.round.orphansDeleted,
      durationMs: performance.now() - this.round.startedAt,
    };
    for (const waiter of this.syncWaiters) waiter.resolve(report);
    this.syncWaiters = [];
  }

  private async observeAll(client: DynsecClient): Promise<void> {
    // A syncAll that arrives while this reads (paged and paced: seconds at fleet size) asks for
    // another read and counts only from it: had this one decided with it, every device not yet
    // named by applyDevice would have been deleted as an orphan on each restart.
    this.observeAllNeeded = false;
    const complete = this.complete;
    this.round = { commands: 0, orphansDeleted: 0, startedAt: performance.now() };
    if (this.everyDevice) this.replaceDesired(this.everyDevice());
    await this.ensureDefaultAccess(client);
    // A cut-off cannot be served before the read ends; deferring a pause ends the read sooner.
    const pace = (durationMs: number) => this.pace(durationMs, false);
    const roles = await listAllRoles(client, pace);
    const groups = await listAllGroups(client, pace);
    const clients = await listAllClients(client, pace);
    const observed = new Map<string, { role?: ObservedDevice["role"]; clients: ObservedClient[] }>();
    const entry = (owner: string) => {
      const found = observed.get(owner) ?? { clients: [] };
      observed.set(owner, found);
      return found;
    };
    const gates = new Map<string, { acls?: ObservedGate["acls"]; groupRoles?: string[] }>();
    const gate = (name: string) => {
      const found = gates.get(name) ?? {};
      gates.set(name, found);
      return found;
    };
    for (const role of roles) {
      if (this.isGate(role.rolename)) gate(role.rolename).acls = role.acls;
      else if (role.rolename.startsWith(this.prefix)) entry(role.rolename).role = role;
    }
    for (const found of groups)
      if (this.isGate(found.groupname))
        gate(found.groupname).groupRoles = found.roles.map((role) => role.rolename);
    for (const found of clients)
      if (found.textname?.startsWith(this.prefix))
        entry(found.textname).clients.push(toObservedClient(found));
    this.observed = observed;
    this.observedGates = gates;
    for (const name of new Set([...this.gates.keys(), ...gates.keys()]))
      if (this.decides(name, complete)) this.markDirty(name);
    for (const owner of new Set([...this.desired.keys(), ...observed.keys()]))
      if (this.decides(owner, complete)) this.markDirty(owner);
    this.nextResyncAt = performance.now() + this.resyncIntervalMs;
  }

  /**
   * Delivery outside a grant must be denied by default, or a resumed session keeps receiving what its
   * device may no longer read; a broker set up by `mosquitto_ctrl dynsec init` allows it.
   */
  private async ensureDefaultAccess(client: DynsecClient): Promise<void> {
    const observed = defaultAccessSchema.parse(await client.run({ command: "getDefaultACLAccess" }));
    for (const command of planDefaultAccess(observed.acls)) {
      await client.run(command);
      this.round.commands++;
      this.options.logger?.warn({ command }, "corrected the broker's default access");
    }
  }

  private async converge(client: DynsecClient, owner: string): Promise<void> {
    if (this.isGate(owner)) return this.convergeGate(client, owner);
    const entry = this.desired.get(owner);
    const desired = entry ?? undefined;
    // The device's client names its tenant's gate role and group: they must exist first.
    if (desired && this.dirty.has(desired.gate)) {
      // On behalf of a cut-off (a narrowing), the gate is part of it: not interrupted by it.
      await this.convergeGate(client, desired.gate, this.cutOffs.has(owner));
      if (this.interrupted.has(desired.gate)) return;
    }
    for (let attempt = 1; attempt <= ATTEMPTS_PER_DEVICE; attempt++) {
      if (this.interrupted.delete(owner) && !(await this.reread(client, owner, desired))) return;
      const observed = this.observed.get(owner) ?? NOTHING_OBSERVED;
      const commands = planDevice(desired, observed);
      const isOrphan = entry === undefined && commands.length > 0;
      const outcome = await this.apply(client, owner, commands);
      // A cut-off goes first; this device stays dirty and is planned again from what the broker holds.
      if (outcome === "interrupted") return;
      if (outcome === "applied") {
        for (const username of sessionsToDiscard(desired, observed))
          await discardSession(this.options.connection, username);
        this.observed.set(owner, observationOf(desired));
        if (isOrphan) this.round.orphansDeleted++;
        if (!desired) this.reviewGateOf(owner);
        // A newer desired state arrived meanwhile: the device stays dirty and is planned again.
        if (this.desired.get(owner) !== entry) return;
        if (entry === null) this.desired.delete(owner);
        this.markClean(owner);
        this.settle(owner);
        return;
      }
      if (!(await this.reread(client, owner, desired))) return;
    }
    this.giveUp(
      owner,
      new BrokerConflictError(`${owner}: no convergence after ${ATTEMPTS_PER_DEVICE} attempts`),
    );
  }

  /** A gate nobody wants goes once its tenant's last client has: look again after each removal. */
  private reviewGateOf(owner: string): void {
    const tenant = ownerRef(this.prefix, owner)?.tenant;
    if (!tenant) return;
    const gate = gateName(this.prefix, tenant);
    if (!this.gates.get(gate) && this.decides(gate) && this.observedGates.has(gate)) this.markDirty(gate);
  }

  private async convergeGate(client: DynsecClient, name: string, forCutOff = false): Promise<void> {
    const entry = this.gates.get(name);
    for (let attempt = 1; attempt <= ATTEMPTS_PER_DEVICE; attempt++) {
      if (this.interrupted.delete(name)) await this.refreshGate(client, name);
      const target = this.gateTarget(name);
      const commands = planGate(name, target, this.observedGates.get(name) ?? NO_GATE);
      const outcome = await this.apply(client, name, commands, forCutOff);
      if (outcome === "interrupted") return;
      if (outcome === "applied") {
        if (entry === undefined && !target && commands.length > 0) this.round.orphansDeleted++;
        if (target) this.observedGates.set(name, gateObservationOf(target));
        else this.observedGates.delete(name);
        if (this.gates.get(name) !== entry) return;
        if (entry === null && !target) this.gates.delete(name);
        this.markClean(name);
        this.settle(name);
        return;
      }
      await this.refreshGate(client, name);
    }
    this.giveUp(
      name,
      new BrokerConflictError(`${name}: no convergence after ${ATTEMPTS_PER_DEVICE} attempts`),
    );
  }

  /** Re-reads one gate after a refused command. */
  private async refreshGate(client: DynsecClient, name: string): Promise<void> {
    const role = await this.lookup(client, { command: "getRole", rolename: name }, getRoleSchema);
    const group = await this.lookup(client, { command: "getGroup", groupname: name }, getGroupSchema);
    this.observedGates.set(name, {
      ...(role ? { acls: role.role.acls } : {}),
      ...(group ? { groupRoles: group.group.roles.map((r) => r.rolename) } : {}),
    });
  }

  /** A child logger with `tenant` and `device`, or `owner` for a name that does not parse. */
  private deviceLogger(owner: string): Logger | undefined {
    return this.options.logger?.child(ownerRef(this.prefix, owner) ?? { owner });
  }

  /** Leaves the device until the next full resync and tells its callers why. */
  private giveUp(owner: string, error: BrokerConflictError): void {
    this.markClean(owner);
    this.deviceLogger(owner)?.error({ err: error.message }, "device not synced to the broker");
    this.settle(owner, error);
  }

  /**
   * Sends the commands one per message, paced; "not found" on a delete counts as done. The commands
   * of a device or gate that cuts nothing off stop when a cut-off is waiting, so that it never waits
   * for the rest of them and their pauses.
   */
  private async apply(
    client: DynsecClient,
    owner: string,
    commands: readonly DynsecCommand[],
    forCutOff = false,
  ): Promise<"applied" | "drifted" | "interrupted"> {
    const cutsOff = forCutOff || this.cutOffs.has(owner);
    for (const [index, command] of commands.entries()) {
      if (index > 0 && !cutsOff && this.cutOffs.size > 0) {
        this.interrupted.add(owner);
        return "interrupted";
      }
      const started = performance.now();
      this.activity = "command";
      const [response] = await client.send([command]);
      const durationMs = performance.now() - started;
      this.traceCutOff(owner, started, durationMs);
      if (MUTATING.has(command.command)) this.round.commands++;
      this.options.onCommand?.({
        command: command.command,
        owner,
        durationMs,
        ...(response?.error ? { error: response.error } : {}),
      });
      await this.pace(durationMs, cutsOff);
      if (!response) throw new Error(`dynamic-security ${command.command}: no response`);
      const gone = response.error && command.command.startsWith("delete") && NOT_FOUND.test(response.error);
      if (response.error && !gone) {
        this.deviceLogger(owner)?.info(
          { command: command.command, reason: response.error },
          "broker state drifted; re-reading",
        );
        return "drifted";
      }
    }
    return "applied";
  }

  /** Re-reads the device before planning it again; false when it cannot converge (given up, callers told). */
  private async reread(client: DynsecClient, owner: string, desired: DesiredDevice | undefined) {
    try {
      await this.refresh(client, owner, desired);
      return true;
    } catch (error) {
      if (!(error instanceof BrokerConflictError)) throw error;
      this.giveUp(owner, error);
      return false;
    }
  }

  /** Re-reads one device's state after a refused command. */
  private async refresh(
    client: DynsecClient,
    owner: string,
    desired: DesiredDevice | undefined,
  ): Promise<void> {
    const role = await this.lookup(client, { command: "getRole", rolename: owner }, getRoleSchema);
    const usernames = new Set((this.observed.get(owner)?.clients ?? []).map((found) => found.username));
    if (desired?.client) usernames.add(desired.client.username);
    const clients: ObservedClient[] = [];
    for (const username of usernames) {
      const found = await this.lookup(client, { command: "getClient", username }, getClientSchema);
      if (!found) continue;
      if (found.client.textname === owner) clients.push(toObservedClient(found.client));
      else if (username === desired?.client?.username)
        throw new BrokerConflictError(
          `${owner}: username ${username} belongs to a client the operator does not own`,
        );
    }
    this.observed.set(owner, { ...(role ? { role: role.role } : {}), clients });
  }

  /** The pause after a change (see pauseAfter): a deferrable one ends when a cut-off arrives, owing the rest. */
  private async pace(durationMs: number, cutsOff: boolean): Promise<void> {
    const { pauseMs, deferrable } = pauseAfter({
      durationMs,
      pacing: this.pacing,
      owedMs: this.owedPauseMs,
      cutsOff,
    });
    this.owedPauseMs = 0;
    if (pauseMs <= 0) return;
    this.activity = "pause";
    if (!deferrable) {
      await sleep(pauseMs);
      return;
    }
    const started = performance.now();
    let cutShort = this.cutOffs.size > 0;
    if (!cutShort) {
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.interruptPause = () => {
          cutShort = true;
          resolve();
        };
        timer = setTimeout(resolve, pauseMs);
      });
      clearTimeout(timer);
      this.interruptPause = () => undefined;
    }
    this.owedPauseMs = owedAfterPause({ pauseMs, elapsedMs: performance.now() - started, cutShort });
  }

  /** The first command of a pending cut-off: logged and reported, once. */
  private traceCutOff(owner: string, startedMs: number, durationMs: number): void {
    const request = this.cutOffRequests.get(owner);
    if (!request) return;
    this.cutOffRequests.delete(owner);
    const sentAt = performance.timeOrigin + startedMs;
    const event = {
      owner,
      requestedAt: request.at,
      sentAt,
      ackedAt: sentAt + durationMs,
      behind: request.behind,
    };
    this.options.onCutOff?.(event);
    this.deviceLogger(owner)?.info(event, "cut-off sent to the broker");
  }

  private async lookup<T>(
    client: DynsecClient,
    command: DynsecCommand,
    schema: z.ZodType<T>,
  ): Promise<T | undefined> {
    const [response] = await client.send([command]);
    if (response?.error && NOT_FOUND.test(response.error)) return undefined;
    if (!response || response.error)
      throw new Error(`dynamic-security ${command.command}: ${response?.error ?? "no response"}`);
    return schema.parse(response.data);
  }
}
