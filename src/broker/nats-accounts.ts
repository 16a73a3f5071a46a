import { createHash } from "node:crypto";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { type ClaimsData, encodeAuthorizationResponse, encodeUser } from "@nats-io/jwt";
import { createUser, type KeyPair } from "@nats-io/nkeys";
import { connect, jwtAuthenticator, type Msg, type NatsConnection } from "@nats-io/transport-node";
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
import {
  bootstrapUserJwt,
  encodeDeviceUser,
  encodeTenantAccount,
  keyFromSeed,
  type NatsBootstrapKeys,
  type TenantLimits,
} from "./nats-claims.js";
import {
  type AuthorizationRequest,
  authorizationRequestSchema,
  decideLogin,
  deviceClientId,
  type TenantTrust,
} from "./nats-login.js";
import { verifiedClaims } from "./nats-signing.js";
import { devicePermissions, permissionsNarrow } from "./nats-subjects.js";

/** Where tenants' account keys live (Secrets in the operator's namespace): created on first use. */
export interface AccountKeyStore {
  accountSeed(tenant: string): Promise<string>;
  /** The tenant's seed if it has one; creates none. */
  existingAccountSeed(tenant: string): Promise<string | undefined>;
  /** Forgets the tenant's key, so a later tenant of that name gets a new, empty account. Idempotent. */
  deleteAccount(tenant: string): Promise<void>;
  /** Every tenant that has a key. */
  tenants(): Promise<string[]>;
}

export interface NatsAdapterOptions {
  readonly servers: readonly string[];
  /** Servers that must confirm an account update before it counts as applied. */
  readonly clusterSize: number;
  readonly keys: NatsBootstrapKeys;
  readonly accountKeys: AccountKeyStore;
  readonly tenantLimits: (tenant: string) => TenantLimits;
  /**
   * The tenant's device CA and revoked serials, which certificate logins are checked against;
   * without it (or without an answer for the tenant) every certificate login is refused.
   */
  readonly tenantTrust?: (tenant: string) => TenantTrust | undefined;
  /**
   * Whether the tenant exists; asked at a full resync (when the caches are complete) to close the
   * accounts of tenants deleted while no operator ran.
   */
  readonly tenantExists: (tenant: string) => boolean;
  /** How long one login's user stays valid; the server drops the connection then and the device logs in again. */
  readonly userLifetimeSeconds?: number;
  /** How long to wait for every server's answer. */
  readonly requestTimeoutMs?: number;
  readonly logger?: Logger;
}

export class BrokerUnconfirmedError extends Error {
  override name = "BrokerUnconfirmedError";
}

/** Who answered a request every server answers, and its error when it failed. */
const serverAnswer = z.object({
  server: z.object({ id: z.string(), name: z.string() }),
  error: z.object({ code: z.number().optional(), description: z.string().optional() }).optional(),
});

const claimUpdateReply = serverAnswer.extend({ data: z.object({ code: z.number() }).optional() });

const connzConnection = z.object({
  cid: z.number(),
  mqtt_client: z.string().optional(),
  /** The user's tags (with `auth`): a certificate login's serial. */
  tags: z.array(z.string()).nullish(),
});
type ConnzConnection = z.infer<typeof connzConnection>;

const connzReply = serverAnswer.extend({
  data: z.object({ connections: z.array(connzConnection).nullish() }).nullish(),
});

/** An account's JetStream on one server; `data` is null where the account is not loaded or has none. */
const jszReply = serverAnswer.extend({ data: z.object({ id: z.string() }).nullish() });

/** The header in which a server names its curve key when it seals an authorization request (server/auth_callout.go). */
const SERVER_XKEY_HEADER = "Nats-Server-Xkey";

/** The streams nats-server creates in an account for its MQTT clients (server/mqtt.go). */
const MQTT_STREAMS = ["$MQTT_sess", "$MQTT_msgs", "$MQTT_rmsgs", "$MQTT_qos2in", "$MQTT_out"] as const;
/** JetStream API error code "stream not found". */
const STREAM_NOT_FOUND = 10059;
const jsApiReply = z.object({
  error: z.object({ err_code: z.number(), description: z.string() }).optional(),
});

const deviceKey = (ref: DeviceRef) => `${ref.tenant}/${ref.device}`;
/** The user tag that names the certificate a connection logged in with (tags are lower case). */
const serialTag = (serial: string) => `certificate-serial:${serial}`;
/** More connections than an account can hold: one CONNZ page covers the whole account. */
const CONNZ_LIMIT = 1 << 20;

/**
 * NATS in operator mode: a tenant is an account signed with the operator key (its key kept by
 * `accountKeys`), a device login is decided by this adapter's auth callout, which issues a user
 * signed by the tenant's account key for that one connection. The broker holds no per-device state;
 * an account update counts only when every server has confirmed it, and a cut-off kicks the
 * device's connections on every server.
 */
export class NatsAccountsAdapter implements BrokerAdapter {
  private readonly desired = new Map<string, BrokerDevice>();
  private readonly byUsername = new Map<string, string>();
  private readonly accounts = new Map<string, { key: KeyPair; pushed?: string }>();
  /**
   * Per tenant, the last account push queued. A server keeps whichever JWT arrives last, so one
   * tenant's pushes run one at a time, and each reads the limits when it runs: the last desired wins.
   */
  private readonly pushes = new Map<string, Promise<string>>();
  private readonly listeners = new Set<(status: BrokerStatus) => void>();
  /**
   * Revoked serials per tenant as the revocation controller last reported them: they count at once,
   * before the tenant's CRL Secret reaches `tenantTrust`'s cache, so a kicked device cannot log in
   * again with its revoked certificate meanwhile.
   */
  private readonly revoked = new Map<string, ReadonlySet<string>>();
  /** The serials whose connections every server has dropped, per tenant. */
  private readonly kickedRevoked = new Map<string, ReadonlySet<string>>();
  private current: BrokerStatus = { synced: false, reason: "BrokerError", message: "not connected yet" };
  private system?: NatsConnection;
  private callout?: NatsConnection;
  private readonly ready: Promise<void>;
  /**
   * Whether this replica has been given devices (it leads). Every replica's callout receives each
   * authorization request and the server takes the first answer, so one without the desired set
   * stays silent instead of refusing devices it has not heard of.
   */
  private serving = false;

  constructor(private readonly options: NatsAdapterOptions) {
    this.ready = this.connect();
    this.ready.catch((error: unknown) => this.setStatus(outage(error)));
  }

  private async connect(): Promise<void> {
    const { keys } = this.options;
    const common = { servers: [...this.options.servers], maxReconnectAttempts: -1, reconnectTimeWait: 200 };
    const login = async (user: "systemUser" | "calloutUser") =>
      connect({
        ...common,
        name: `iot-tenant-operator-${user}`,
        authenticator: jwtAuthenticator(await bootstrapUserJwt(keys, user), keys[user].getSeed()),
      });
    this.system = await login("systemUser");
    this.callout = await login("calloutUser");
    this.callout.subscribe("$SYS.REQ.USER.AUTH", {
      callback: (error, msg) => {
        if (!error)
          this.answer(msg).catch((err: unknown) =>
            this.options.logger?.error({ err }, "auth callout failed"),
          );
      },
    });
    for (const nc of [this.system, this.callout]) this.watch(nc);
    await this.callout.flush();
    this.setStatus({ synced: true });
  }

  private watch(nc: NatsConnection): void {
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect") this.setStatus(outage(new Error("lost the connection to NATS")));
        if (status.type === "reconnect") this.setStatus({ synced: true });
      }
    })();
  }

  private setStatus(status: BrokerStatus): void {
    if (JSON.stringify(status) === JSON.stringify(this.current)) return;
    this.current = status;
    for (const listener of this.listeners) listener(status);
  }

  /** The auth callout: one decision per login, answered to the server that asked. */
  private async answer(msg: Msg): Promise<void> {
    if (!this.serving) return;
    const { keys } = this.options;
    // Sealed to the callout's xkey by the server, which names its own curve key in the header.
    const serverXkey = msg.headers?.get(SERVER_XKEY_HEADER) || undefined;
    let request: AuthorizationRequest;
    try {
      const opened = serverXkey ? keys.calloutXkey.open(msg.data, serverXkey) : msg.data;
      if (!opened) throw new Error("the request is not sealed to this callout's xkey");
      // Verifies the server's signature over the request.
      request = authorizationRequestSchema.parse(
        (verifiedClaims(new TextDecoder().decode(opened)) as ClaimsData<unknown>).nats,
      );
    } catch (error) {
      this.options.logger?.warn({ err: error }, "malformed authorization request");
      return;
    }
    const decision = decideLogin(request, {
      deviceByUsername: (username) => {
        const key = this.byUsername.get(username);
        return key === undefined ? undefined : this.desired.get(key);
      },
      tenantTrust: (tenant) => this.tenantTrust(tenant),
    });
    let response: { jwt?: string; error?: string };
    if (decision.allow) {
      const account = await this.accountKey(decision.device.tenant);
      const jwt = await encodeDeviceUser({
        userPublicKey: request.user_nkey,
        device: decision.device.device,
        account,
        permissions: decision.permissions,
        ...(decision.certificateSerial ? { tags: [serialTag(decision.certificateSerial)] } : {}),
        expiresAt: Math.floor(Date.now() / 1000) + (this.options.userLifetimeSeconds ?? 86_400),
      });
      response = { jwt };
    } else {
      this.options.logger?.info(
        {
          username: request.connect_opts.user,
          clientId: request.client_info.mqtt_id,
          reason: decision.reason,
          server: request.server_id.name,
        },
        "login refused",
      );
      response = { error: decision.reason };
    }
    const answer = await encodeAuthorizationResponse(
      request.user_nkey,
      request.server_id.id,
      keys.authAccount,
      response,
      {},
    );
    msg.respond(serverXkey ? keys.calloutXkey.seal(new TextEncoder().encode(answer), serverXkey) : answer);
  }

  private async accountKey(tenant: string): Promise<KeyPair> {
    const known = this.accounts.get(tenant);
    if (known) return known.key;
    const key = keyFromSeed(await this.options.accountKeys.accountSeed(tenant));
    const entry = this.accounts.get(tenant) ?? { key };
    this.accounts.set(tenant, entry);
    return entry.key;
  }

  private async connection(): Promise<NatsConnection> {
    await this.ready;
    if (!this.system) throw new Error("not connected to NATS");
    return this.system;
  }

  /** Sends a request every server answers; returns the answers of the servers that did within the timeout. */
  private async askServers<T extends { server: { id: string } }>(
    subject: string,
    payload: string,
    schema: z.ZodType<T>,
  ): Promise<T[]> {
    const nc = await this.connection();
    const replies = await nc.requestMany(subject, payload, {
      strategy: "count",
      maxMessages: this.options.clusterSize,
      maxWait: this.requestTimeout,
    });
    const answers = new Map<string, T>();
    for await (const reply of replies) {
      const parsed = schema.parse(reply.json());
      answers.set(parsed.server.id, parsed);
    }
    return [...answers.values()];
  }

  private assertEveryServer(subject: string, answers: readonly unknown[]): void {
    if (answers.length < this.options.clusterSize)
      throw new BrokerUnconfirmedError(
        `${subject}: ${answers.length} of ${this.options.clusterSize} servers answered within the timeout`,
      );
  }

  /** As askServers, but fewer answers than `clusterSize` is an error, never a partial success. */
  private async askEveryServer<T extends { server: { id: string } }>(
    subject: string,
    payload: string,
    schema: z.ZodType<T>,
  ): Promise<T[]> {
    const answers = await this.askServers(subject, payload, schema);
    this.assertEveryServer(subject, answers);
    return answers;
  }

  /** Pushes the tenant's account JWT if it changed, and returns once every server has applied it. */
  private ensureAccount(tenant: string): Promise<string> {
    return this.pushAccount(tenant, () => this.options.tenantLimits(tenant));
  }

  /** Queues a push of the tenant's account behind the one before it; `limits` is read when it runs. */
  private pushAccount(tenant: string, limits: () => TenantLimits): Promise<string> {
    const next = (this.pushes.get(tenant) ?? Promise.resolve(""))
      .catch(() => "")
      .then(() => this.pushNow(tenant, limits()));
    this.pushes.set(tenant, next);
    const forget = () => {
      if (this.pushes.get(tenant) === next) this.pushes.delete(tenant);
    };
    next.then(forget, forget);
    return next;
  }

  private async pushNow(tenant: string, limits: TenantLimits): Promise<string> {
    const key = await this.accountKey(tenant);
    const entry = this.accounts.get(tenant) ?? { key };
    const digest = createHash("sha256").update(JSON.stringify(limits)).digest("hex");
    if (entry.pushed !== digest) {
      const jwt = await encodeTenantAccount(tenant, key, this.options.keys.operator, limits);
      const replies = await this.askEveryServer("$SYS.REQ.CLAIMS.UPDATE", jwt, claimUpdateReply);
      const refused = replies.filter((r) => r.error || r.data?.code !== 200);
      if (refused.length > 0)
        throw new BrokerUnconfirmedError(
          `account update for ${tenant} refused by ${refused.map((r) => `${r.server.name}: ${r.error?.description ?? "no 200"}`).join(", ")}`,
        );
      if (limits.jetStreamBytes > 0) await this.loadEverywhere(tenant, key.getPublicKey());
      entry.pushed = digest;
      this.accounts.set(tenant, entry);
    }
    return key.getPublicKey();
  }

  /**
   * Has every server load the account and confirm its JetStream is on. A server otherwise loads a
   * new account when a device first logs in, and a JetStream request racing that load saw the account
   * before its JetStream was enabled: the server closed the login ("JetStream not enabled for account").
   */
  private async loadEverywhere(tenant: string, account: string): Promise<void> {
    // An account-scoped CONNZ makes each server look the account up, loading it from its resolver.
    await this.askEveryServer(`$SYS.REQ.ACCOUNT.${account}.CONNZ`, JSON.stringify({ limit: 1 }), connzReply);
    const replies = await this.askEveryServer(`$SYS.REQ.ACCOUNT.${account}.JSZ`, "", jszReply);
    const without = replies.filter((r) => r.error || !r.data);
    if (without.length > 0)
      throw new BrokerUnconfirmedError(
        `account of ${tenant} has no JetStream on ${without.map((r) => `${r.server.name}: ${r.error?.description ?? "no answer"}`).join(", ")}`,
      );
  }

  /**
   * Deletes the streams in which the tenant's account keeps MQTT sessions, retained and in-flight
   * messages, as a user the operator mints in that account for this purpose only (the account's
   * JetStream is disabled afterwards, and a server does not come up healthy with streams of an
   * account whose JetStream is off).
   */
  private async deleteMqttStreams(tenant: string): Promise<void> {
    const account = await this.accountKey(tenant);
    const user = createUser();
    const jwt = await encodeUser("iot-tenant-operator-purge", user, account, {
      allowed_connection_types: ["STANDARD"],
    });
    const nc = await connect({
      servers: [...this.options.servers],
      name: "iot-tenant-operator-purge",
      authenticator: jwtAuthenticator(jwt, user.getSeed()),
    });
    try {
      for (const stream of MQTT_STREAMS) {
        const reply = jsApiReply.parse(
          (await nc.request(`$JS.API.STREAM.DELETE.${stream}`, "", { timeout: this.requestTimeout })).json(),
        );
        if (reply.error && reply.error.err_code !== STREAM_NOT_FOUND)
          throw new Error(`deleting ${stream} of ${tenant}: ${reply.error.description}`);
      }
    } finally {
      await nc.close();
    }
  }

  private get requestTimeout(): number {
    return this.options.requestTimeoutMs ?? 5_000;
  }

  /**
   * Drops every live connection of the device on every server. The servers that answer are
   * served at once; if one did not answer, the call fails afterwards so the caller retries (the
   * callout already refuses the device's next login everywhere).
   */
  private async kick(device: BrokerDevice): Promise<void> {
    const clientId = deviceClientId(device);
    // Only the account's name is needed: a cut-off never waits behind the tenant's account pushes.
    await this.kickWhere(
      (await this.accountKey(device.tenant)).getPublicKey(),
      { mqtt_client: clientId },
      (c) => c.mqtt_client === clientId,
    );
  }

  /** Kicks, on every server, the account's connections that `filter` lists and `match` picks. */
  private async kickWhere(
    account: string,
    filter: Record<string, unknown>,
    match: (connection: ConnzConnection) => boolean,
  ): Promise<void> {
    const subject = `$SYS.REQ.ACCOUNT.${account}.CONNZ`;
    const replies = await this.askServers(subject, JSON.stringify(filter), connzReply);
    const nc = await this.connection();
    await Promise.all(
      replies.flatMap((reply) =>
        (reply.data?.connections ?? []).filter(match).map((c) =>
          nc.request(`$SYS.REQ.SERVER.${reply.server.id}.KICK`, JSON.stringify({ cid: c.cid }), {
            timeout: this.requestTimeout,
          }),
        ),
      ),
    );
    this.assertEveryServer(subject, replies);
  }

  private tenantTrust(tenant: string): TenantTrust | undefined {
    const trust = this.options.tenantTrust?.(tenant);
    const reported = this.revoked.get(tenant);
    if (!trust || !reported) return trust;
    return { ...trust, revokedSerials: new Set([...trust.revokedSerials, ...reported]) };
  }

  /**
   * The tenant's revoked certificates (its CRL's serials, lower-case hex): the callout refuses them
   * from now on, and when the list gained a serial, each live connection that logged in with a now
   * revoked certificate is dropped on every server.
   */
  async certificatesRevoked(tenant: string, serials: readonly string[]): Promise<void> {
    const current = new Set(serials);
    this.revoked.set(tenant, current);
    const kicked = this.kickedRevoked.get(tenant);
    const account = this.accounts.get(tenant)?.key.getPublicKey();
    if (!account || serials.every((serial) => kicked?.has(serial))) return;
    const tags = new Set(serials.map(serialTag));
    await this.kickWhere(account, { auth: true, limit: CONNZ_LIMIT }, (c) =>
      (c.tags ?? []).some((tag) => tags.has(tag)),
    );
    // Only once every server answered; otherwise the next report kicks again.
    this.kickedRevoked.set(tenant, current);
  }

  private remember(device: BrokerDevice): BrokerDevice | undefined {
    const key = deviceKey(device);
    const previous = this.desired.get(key);
    if (previous) this.byUsername.delete(previous.credentials.username);
    this.desired.set(key, device);
    this.byUsername.set(device.credentials.username, key);
    return previous;
  }

  async applyDevice(device: BrokerDevice): Promise<void> {
    this.serving = true;
    const previous = this.remember(device);
    await this.ensureAccount(device.tenant);
    if (previous && loses(previous, device)) await this.kick(previous);
  }

  async removeDevice(ref: DeviceRef): Promise<void> {
    const previous = this.desired.get(deviceKey(ref));
    if (!previous) return;
    this.desired.delete(deviceKey(ref));
    this.byUsername.delete(previous.credentials.username);
    await this.kick(previous);
  }

  async syncAll(devices: readonly BrokerDevice[] | (() => readonly BrokerDevice[])): Promise<SyncReport> {
    const started = performance.now();
    const list = typeof devices === "function" ? devices() : devices;
    this.serving = true;
    const wanted = new Set(list.map(deviceKey));
    const gone = [...this.desired.values()].filter((d) => !wanted.has(deviceKey(d)));
    for (const device of gone) await this.removeDevice(device);
    for (const [i, device] of list.entries()) {
      await this.applyDevice(device);
      // Settled in microtasks: a fleet's worth must let timers (the lease renewal) and sockets run.
      if (i % 100 === 99) await yieldToEventLoop();
    }
    await this.closeVanishedTenants();
    return {
      commands: this.accounts.size,
      orphansDeleted: gone.length,
      durationMs: performance.now() - started,
    };
  }

  /**
   * Closes the account of every tenant that has a key but no longer exists: deleted while no
   * operator ran, so no finalizer closed it. One that fails is logged and tried at the next resync.
   */
  private async closeVanishedTenants(): Promise<void> {
    const vanished = (await this.options.accountKeys.tenants()).filter((t) => !this.options.tenantExists(t));
    const results = await Promise.allSettled(vanished.map((tenant) => this.closeAccount(tenant)));
    for (const [i, result] of results.entries())
      if (result.status === "rejected")
        this.options.logger?.warn(
          { err: result.reason, tenant: vanished[i] },
          "closing a vanished tenant's account failed",
        );
  }

  /**
   * What outlives a tenant's devices is its account (retained messages and sessions live in the
   * account's own streams): the account is closed (no connection allowed, every server confirms)
   * and its key forgotten, so a later tenant of the same name gets a new account and sees nothing.
   */
  purgeTenant(ref: TenantRef): Promise<void> {
    return this.closeAccount(ref.tenant);
  }

  private async closeAccount(tenant: string): Promise<void> {
    // No key: never provisioned, or purged already (a retry after the finalizer's removal failed, or a
    // stale cache). A new key would be an account the servers do not know, refusing the purge's login.
    if (!this.accounts.has(tenant) && !(await this.options.accountKeys.existingAccountSeed(tenant))) return;
    await this.deleteMqttStreams(tenant);
    await this.pushAccount(tenant, () => CLOSED_ACCOUNT);
    this.accounts.delete(tenant);
    await this.options.accountKeys.deleteAccount(tenant);
  }

  /** A tenant's devices are cut off together: each loses its login decision and is kicked on every server. */
  async removeTenant(ref: Pick<TenantRef, "tenant">): Promise<void> {
    const devices = [...this.desired.values()].filter((device) => device.tenant === ref.tenant);
    await Promise.all(devices.map((device) => this.removeDevice(device)));
  }

  status(): BrokerStatus {
    return this.current;
  }

  firstStatus(): Promise<BrokerStatus> {
    return this.ready.then(
      () => this.current,
      () => this.current,
    );
  }

  onStatusChange(listener: (status: BrokerStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    await this.ready.catch(() => undefined);
    await Promise.all([this.system?.close(), this.callout?.close()]);
  }
}

const CLOSED_ACCOUNT: TenantLimits = { connections: 0, subscriptions: 0, payloadBytes: 0, jetStreamBytes: 0 };

/** True when the device may do less than before: its live connections must log in again. */
function loses(previous: BrokerDevice, next: BrokerDevice): boolean {
  if (!next.enabled || next.suspended) return true;
  if (JSON.stringify(previous.credentials) !== JSON.stringify(next.credentials)) return true;
  return permissionsNarrow(devicePermissions(previous), devicePermissions(next));
}

function outage(error: unknown): BrokerStatus {
  return {
    synced: false,
    reason: "BrokerError",
    message: error instanceof Error ? error.message : String(error),
  };
}
