import { randomUUID } from "node:crypto";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { z } from "zod";
import { deviceSecretName } from "../api/derived-names.js";
import { ownerRef } from "../broker/desired.js";
import { DynsecClient, type DynsecConnection } from "../broker/dynsec-client.js";
import {
  DEFAULT_OWNER_PREFIX,
  defaultAccessSchema,
  listAllClients,
  listAllRoles,
} from "../broker/mosquitto-dynsec.js";
import { Resource } from "../controllers/resources.js";
import type { KubeClient } from "../runtime/kube-client.js";
import type { KubeObject } from "../runtime/kube-object.js";
import type { IsolationCheck, TenantView } from "./isolation.js";
import { NOT_AUTHORIZED, probeOptions, subscribeCodes } from "./mqtt-probe.js";

/**
 * The broker half of `verify`: a device's own certificate tries what another tenant's device must
 * never do (subscribe outside its grant, take over a client id), and the admin API shows what no
 * probe can (delivery allowed by default, broker clients with no Device behind them).
 *
 * Probing as a device is not free: the device listeners make the client id the identity, so a probe
 * connection drops that device's live connection. `verify` therefore probes only with Devices that
 * carry PROBE_LABEL, and reports SKIP, never PASS, where it had nothing to probe with.
 */

/** Marks a Device whose credentials `verify` may use to probe the broker (create one per tenant). */
export const PROBE_LABEL = "iot.tenant-operator.io/verify-probe";

export interface BrokerEndpoint {
  readonly host: string;
  readonly mtlsPort: number;
  /** The admin API; without it the checks that need it are skipped. */
  readonly admin?: DynsecConnection;
  /** The admin's own dynsec client, which has no Device. */
  readonly adminUsername?: string;
}

/** A Device verify may probe with: Ready, x509, labelled, and granted a subscription it can show works. */
interface Probe {
  readonly tenant: TenantView;
  readonly name: string;
  /** A filter inside the probe's grant: the positive control of every refusal. */
  readonly ownFilter: string;
  readonly tls: Pick<IClientOptions, "ca" | "cert" | "key">;
}

const probeDeviceSchema = z.object({
  metadata: z.object({
    name: z.string(),
    namespace: z.string(),
    labels: z.record(z.string(), z.string()).optional(),
  }),
  spec: z.object({ topics: z.object({ subscribe: z.array(z.string()) }).optional() }).loose(),
  status: z
    .object({
      username: z.string().optional(),
      conditions: z.array(z.object({ type: z.string(), status: z.string() })).optional(),
    })
    .optional(),
});

function skip(
  property: IsolationCheck["property"],
  tenant: string,
  check: string,
  why: string,
): IsolationCheck {
  return { property, tenant, check, result: "SKIP", detail: why };
}

async function findProbe(
  client: KubeClient,
  tenant: TenantView,
  devices: KubeObject[],
): Promise<Probe | undefined> {
  for (const object of devices) {
    const device = probeDeviceSchema.safeParse(object);
    if (!device.success) continue;
    const { metadata, spec, status } = device.data;
    const ready = status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
    const ownFilter = spec.topics ? spec.topics.subscribe[0] : `devices/${metadata.name}/#`;
    if (
      metadata.labels?.[PROBE_LABEL] !== "true" ||
      !ready ||
      !status?.username?.startsWith("CN=") ||
      !ownFilter
    )
      continue;
    const secret = (await client.get(Resource.secret, {
      namespace: metadata.namespace,
      name: deviceSecretName(metadata.name),
    })) as (KubeObject & { data?: Record<string, string> }) | undefined;
    const pem = (key: string) => Buffer.from(secret?.data?.[key] ?? "", "base64");
    return {
      tenant,
      name: metadata.name,
      ownFilter: `${tenant.topicRoot}/${ownFilter}`,
      tls: { ca: pem("ca.crt"), cert: pem("tls.crt"), key: pem("tls.key") },
    };
  }
  return undefined;
}

function connectAs(broker: BrokerEndpoint, probe: Probe, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(probeOptions(broker.host, broker.mtlsPort, { ...probe.tls, ...options }));
}

const granted = (codes: number[]) => codes.length > 0 && codes.every((c) => c < 128);

/** I2: the probe is granted its own filter (else the refusals prove nothing) and refused everything outside its tenant. */
async function subscribeCheck(
  broker: BrokerEndpoint,
  probe: Probe,
  others: TenantView[],
): Promise<IsolationCheck> {
  const check = `device ${probe.name} cannot subscribe outside its tenant`;
  const connection = await connectAs(broker, probe);
  try {
    const own = await subscribeCodes(connection, probe.ownFilter);
    if (!granted(own))
      return {
        property: "I2",
        tenant: probe.tenant.name,
        check,
        result: "FAIL",
        detail: `its own ${probe.ownFilter} was refused (${own.join(",")}): refusals would prove nothing`,
      };
    const filters = [
      ...others.flatMap((o) => [`${o.topicRoot}/#`, `$share/probe/${o.topicRoot}/#`]),
      "#",
      "+/#",
      "$SYS/#",
      "$CONTROL/#",
    ];
    const leaks: string[] = [];
    for (const filter of filters)
      if ((await subscribeCodes(connection, filter)).some((c) => c !== NOT_AUTHORIZED)) leaks.push(filter);
    return {
      property: "I2",
      tenant: probe.tenant.name,
      check,
      result: leaks.length === 0 ? "PASS" : "FAIL",
      detail: leaks.length
        ? `granted: ${leaks.join(", ")}`
        : `own ${probe.ownFilter} granted; ${filters.length} subscriptions outside it refused by the broker`,
    };
  } finally {
    await connection.endAsync(true);
  }
}

/**
 * I2/I4: a device of another tenant connects with the probe's client id while the probe is online.
 * The probe must keep its connection: a client id that anyone can claim lets them take over sessions
 * and knock devices off.
 */
async function takeoverCheck(broker: BrokerEndpoint, victim: Probe, thief: Probe): Promise<IsolationCheck> {
  const clientId = `verify-${randomUUID()}`;
  const check = `a device of ${thief.tenant.name} cannot take over ${victim.name}'s client id`;
  const first = await connectAs(broker, victim, { clientId });
  let second: MqttClient | undefined;
  try {
    second = await connectAs(broker, thief, { clientId });
    // One round trip on each connection: the broker has handled the second CONNECT before the first is asked.
    await subscribeCodes(second, thief.ownFilter);
    const alive = first.connected && granted(await subscribeCodes(first, victim.ownFilter).catch(() => []));
    return {
      property: "I2",
      tenant: victim.tenant.name,
      check,
      result: alive ? "PASS" : "FAIL",
      detail: alive
        ? `both connected with client id ${clientId}; each got a session of its own`
        : `${thief.name} of ${thief.tenant.name} connected with ${victim.name}'s client id and it was disconnected`,
    };
  } finally {
    await Promise.all([first.endAsync(true), second?.endAsync(true)]);
  }
}

/** Per tenant: subscription refusals and the client-id takeover probe, with the tenant's probe Device. */
export async function brokerProbeChecks(
  client: KubeClient,
  broker: BrokerEndpoint,
  tenant: TenantView,
  others: TenantView[],
  devicesOf: (tenant: TenantView) => Promise<KubeObject[]>,
): Promise<IsolationCheck[]> {
  const probe = await findProbe(client, tenant, await devicesOf(tenant));
  if (!probe) {
    const why = `no Ready x509 Device labelled ${PROBE_LABEL}=true with a subscribe grant to probe with`;
    return [
      skip("I2", tenant.name, "broker isolation", why),
      skip("I2", tenant.name, "client id takeover", why),
    ];
  }
  const checks = [await subscribeCheck(broker, probe, others)];
  let thief: Probe | undefined;
  for (const other of others) {
    thief = await findProbe(client, other, await devicesOf(other));
    if (thief) break;
  }
  checks.push(
    thief
      ? await takeoverCheck(broker, probe, thief)
      : skip("I2", tenant.name, "client id takeover", "no other tenant has a probe Device to try it with"),
  );
  return checks;
}

interface Grant {
  readonly acltype: string;
  readonly topic: string;
  readonly allow: boolean;
}

/**
 * What only the admin API shows, for the whole broker: delivery denied by default, every operator
 * role's receive grants within its subscribe grants, and no broker client without a Device behind it.
 */
export async function brokerStateChecks(
  broker: BrokerEndpoint,
  tenants: TenantView[],
  devicesOf: (tenant: TenantView) => Promise<KubeObject[]>,
): Promise<IsolationCheck[]> {
  if (!broker.admin) {
    const why = "no broker admin connection configured (BROKER_ADMIN_CERT_FILE, BROKER_ADMIN_KEY_FILE)";
    return [
      skip("I2", "*", "delivery checked against grants", why),
      skip("I4", "*", "no orphaned broker clients", why),
    ];
  }
  const admin = await DynsecClient.connect(broker.admin);
  try {
    const defaults = defaultAccessSchema.parse(await admin.run({ command: "getDefaultACLAccess" })).acls;
    const roles = await listAllRoles(admin);
    const clients = await listAllClients(admin);
    const known = new Set<string>();
    for (const tenant of tenants)
      for (const device of await devicesOf(tenant)) known.add(`${tenant.name}:${device.metadata.name}`);
    return [receiveCheck(defaults, roles), ...orphanChecks(broker, tenants, clients, known)];
  } finally {
    await admin.close();
  }
}

function receiveCheck(
  defaults: ReadonlyArray<Omit<Grant, "topic">>,
  roles: ReadonlyArray<{ rolename: string; acls: readonly Grant[] }>,
): IsolationCheck {
  const check = "delivery is checked against each device's current grant";
  const receiveByDefault = defaults.find((d) => d.acltype === "publishClientReceive")?.allow !== false;
  const beyond = roles
    .filter((role) => ownerRef(DEFAULT_OWNER_PREFIX, role.rolename))
    .flatMap((role) => {
      const subscribable = new Set(
        role.acls.filter((a) => a.acltype === "subscribePattern" && a.allow).map((a) => a.topic),
      );
      return role.acls
        .filter((a) => a.acltype === "publishClientReceive" && a.allow && !subscribable.has(a.topic))
        .map((a) => `${role.rolename} receives ${a.topic}`);
    });
  const problems = [
    ...(receiveByDefault
      ? ["the broker delivers by default (defaultACLAccess publishClientReceive allow)"]
      : []),
    ...beyond,
  ];
  return {
    property: "I2",
    tenant: "*",
    check,
    result: problems.length === 0 ? "PASS" : "FAIL",
    detail: problems.length
      ? problems.join("; ")
      : `default receive denied; ${roles.length} roles receive only what they may subscribe to`,
  };
}

function orphanChecks(
  broker: BrokerEndpoint,
  tenants: TenantView[],
  clients: ReadonlyArray<{ username: string; textname?: string | undefined }>,
  known: Set<string>,
): IsolationCheck[] {
  const byTenant = new Map<string, string[]>(tenants.map((t) => [t.name, []]));
  const unowned: string[] = [];
  for (const found of clients) {
    if (found.username === broker.adminUsername) continue;
    const ref = found.textname ? ownerRef(DEFAULT_OWNER_PREFIX, found.textname) : undefined;
    if (!ref) unowned.push(found.username);
    else if (!known.has(`${ref.tenant}:${ref.device}`)) {
      const list = byTenant.get(ref.tenant) ?? [];
      list.push(`${found.username} (${ref.device})`);
      byTenant.set(ref.tenant, list);
    }
  }
  return [
    ...[...byTenant].map(
      ([tenant, orphans]): IsolationCheck => ({
        property: "I4",
        tenant,
        check: "every broker client of the tenant has a Device",
        result: orphans.length === 0 ? "PASS" : "FAIL",
        detail: orphans.length ? `no Device behind: ${orphans.join(", ")}` : "every client has its Device",
      }),
    ),
    {
      property: "I4",
      tenant: "*",
      check: "every broker client is the operator's or its admin",
      result: unowned.length === 0 ? "PASS" : "FAIL",
      detail: unowned.length
        ? `not the operator's: ${unowned.join(", ")}`
        : `${clients.length} clients checked`,
    },
  ];
}
