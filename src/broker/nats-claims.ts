import { type Account, encodeAccount, encodeOperator, encodeUser, type User } from "@nats-io/jwt";
import {
  createAccount,
  createCurve,
  createOperator,
  createUser,
  fromCurveSeed,
  type KeyPair,
} from "@nats-io/nkeys";
import { nativeKeyPair } from "./nats-signing.js";
import type { DevicePermissions } from "./nats-subjects.js";

/**
 * The keys a NATS deployment starts from. The operator key signs every account; the system account
 * carries `$SYS` requests (claim updates, connection lists, kicks); the auth account holds the
 * operator's auth-callout service, which decides every device login.
 */
export const BOOTSTRAP_KEY_NAMES = [
  "operator",
  "systemAccount",
  /** The operator's user in the system account, for claim updates, connection lists and kicks. */
  "systemUser",
  "authAccount",
  /** The auth account's service user that answers `$SYS.REQ.USER.AUTH`. */
  "calloutUser",
  /**
   * The callout's curve key (xkey): servers seal each authorization request (which carries the
   * device's password) to it and the callout seals its answer back, so whoever else can listen
   * on the callout subject or the routes reads neither.
   */
  "calloutXkey",
] as const;
export type BootstrapKeyName = (typeof BOOTSTRAP_KEY_NAMES)[number];
export type NatsBootstrapSeeds = Readonly<Record<BootstrapKeyName, string>>;
export type NatsBootstrapKeys = Readonly<Record<BootstrapKeyName, KeyPair>>;

export function bootstrapKeys(seeds: NatsBootstrapSeeds): NatsBootstrapKeys {
  const entries = BOOTSTRAP_KEY_NAMES.map(
    (name) =>
      [
        name,
        name === "calloutXkey"
          ? fromCurveSeed(new TextEncoder().encode(seeds[name]))
          : keyFromSeed(seeds[name]),
      ] as const,
  );
  return Object.fromEntries(entries) as Record<BootstrapKeyName, KeyPair>;
}

/** Signs natively (see nats-signing.ts): every login through the callout signs twice. */
export function keyFromSeed(seed: string): KeyPair {
  return nativeKeyPair(seed);
}

/** New seeds for a deployment (the harness, an installer). */
export function newBootstrapSeeds(): NatsBootstrapSeeds {
  const make = {
    operator: createOperator,
    systemAccount: createAccount,
    systemUser: createUser,
    authAccount: createAccount,
    calloutUser: createUser,
    calloutXkey: createCurve,
  };
  const entries = BOOTSTRAP_KEY_NAMES.map(
    (name) => [name, new TextDecoder().decode(make[name]().getSeed())] as const,
  );
  return Object.fromEntries(entries) as Record<BootstrapKeyName, string>;
}

/** The JWT a bootstrap user logs in with (system user, callout service user). */
export function bootstrapUserJwt(
  keys: NatsBootstrapKeys,
  user: "systemUser" | "calloutUser",
): Promise<string> {
  const account = user === "systemUser" ? keys.systemAccount : keys.authAccount;
  return encodeUser(user, keys[user], account);
}

/** What every server is configured with: the trust root and the accounts that exist before any tenant. */
export interface ServerTrust {
  readonly operatorJwt: string;
  readonly systemAccount: string;
  /** Preloaded into every server's resolver. */
  readonly preload: Readonly<Record<string, string>>;
  /**
   * The bearer JWT a client that brings none (every MQTT device) logs in with: a powerless user of
   * the auth account, which hands the login to the callout.
   */
  readonly defaultSentinel: string;
}

/**
 * The server reads a limit the JWT leaves out as 0 (nothing allowed), so accounts spell out -1
 * (no limit) for whatever they do not restrict.
 */
const NO_ACCOUNT_LIMITS = {
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  conn: -1,
  leaf: -1,
} as const;

const DENY_ALL: Partial<User> = { pub: { deny: [">"] }, sub: { deny: [">"] } };

export async function serverTrust(keys: NatsBootstrapKeys): Promise<ServerTrust> {
  const systemAccount = keys.systemAccount.getPublicKey();
  const authAccount = keys.authAccount.getPublicKey();
  const operatorJwt = await encodeOperator("iot-tenant-operator", keys.operator, {
    system_account: systemAccount,
  });
  const systemJwt = await encodeAccount(
    "SYS",
    keys.systemAccount,
    { limits: NO_ACCOUNT_LIMITS },
    { signer: keys.operator },
  );
  const authJwt = await encodeAccount(
    "AUTH",
    keys.authAccount,
    {
      limits: NO_ACCOUNT_LIMITS,
      authorization: {
        auth_users: [keys.calloutUser.getPublicKey()],
        // Tenants come and go; the callout alone decides which account a device lands in.
        allowed_accounts: ["*"],
        xkey: keys.calloutXkey.getPublicKey(),
      },
    },
    { signer: keys.operator },
  );
  const defaultSentinel = await encodeUser("sentinel", createUser(), keys.authAccount, {
    ...DENY_ALL,
    bearer_token: true,
  });
  return {
    operatorJwt,
    systemAccount,
    preload: { [systemAccount]: systemJwt, [authAccount]: authJwt },
    defaultSentinel,
  };
}

/** Per-tenant limits on the broker (I6): the account's share of the cluster. */
export interface TenantLimits {
  /** Live connections across the cluster: one per device. */
  readonly connections: number;
  /** Subscriptions across the account's connections (an MQTT `a/#` costs two). */
  readonly subscriptions: number;
  /** Largest message, in bytes. */
  readonly payloadBytes: number;
  /** JetStream file storage for the tenant's MQTT sessions, retained and QoS 1/2 messages, in bytes. */
  readonly jetStreamBytes: number;
}

export interface PerDeviceLimits {
  readonly subscriptions: number;
  readonly jetStreamBytes: number;
  readonly payloadBytes: number;
}

/**
 * A tenant's broker limits from its Tenant spec: one connection per device it may have, and a
 * per-device share of subscriptions and JetStream storage, so one tenant cannot starve the cluster (I6).
 */
export function tenantLimits(maxDevices: number, perDevice: PerDeviceLimits): TenantLimits {
  return {
    connections: maxDevices,
    subscriptions: maxDevices * perDevice.subscriptions,
    payloadBytes: perDevice.payloadBytes,
    jetStreamBytes: maxDevices * perDevice.jetStreamBytes,
  };
}

/**
 * A tenant's account: its limits and nothing else. Bearer users stay allowed (the callout issues
 * them for MQTT devices, which can sign no nonce); no imports or exports, so nothing crosses
 * accounts. JetStream is on because MQTT keeps every session in the account's own streams.
 */
export function tenantAccount(limits: TenantLimits): Partial<Account> {
  return {
    limits: {
      conn: limits.connections,
      subs: limits.subscriptions,
      payload: limits.payloadBytes,
      data: -1,
      imports: 0,
      exports: 0,
      wildcards: true,
      leaf: 0,
      disk_storage: limits.jetStreamBytes,
      mem_storage: 0,
      streams: -1,
      consumer: -1,
    },
  };
}

export function encodeTenantAccount(
  tenant: string,
  account: KeyPair,
  operator: KeyPair,
  limits: TenantLimits,
): Promise<string> {
  return encodeAccount(tenant, account, tenantAccount(limits), { signer: operator });
}

/**
 * The user a device gets for one connection, signed by its tenant's account key: exactly its
 * permissions, MQTT only, and an expiry after which the server drops it and the device logs in
 * (and is decided) again.
 */
export function encodeDeviceUser(options: {
  readonly userPublicKey: string;
  readonly device: string;
  readonly account: KeyPair;
  readonly permissions: DevicePermissions;
  /** Tags the server shows with the connection (CONNZ with auth), e.g. the certificate's serial. */
  readonly tags?: readonly string[];
  readonly expiresAt: number;
}): Promise<string> {
  return encodeUser(
    options.device,
    options.userPublicKey,
    options.account,
    {
      pub: { allow: [...options.permissions.pub] },
      sub: { allow: [...options.permissions.sub] },
      allowed_connection_types: ["MQTT"],
      ...(options.tags ? { tags: [...options.tags] } : {}),
    },
    { exp: options.expiresAt },
  );
}
