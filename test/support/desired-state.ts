import { inject } from "vitest";
import { type Acl, desiredDevice, gateName, sameAcls } from "../../src/broker/desired.js";
import type { DynsecConnection } from "../../src/broker/dynsec-client.js";
import { DynsecClient } from "../../src/broker/dynsec-client.js";
import { DEFAULT_OWNER_PREFIX } from "../../src/broker/mosquitto-dynsec.js";
import { parseDeviceObject, parseTenantObject } from "../../src/controllers/parse.js";
import { brokerDevice, describeCertificate } from "../../src/desired/device.js";
import { TENANT_LABEL } from "../../src/desired/labels.js";
import { REVOCATION_LABEL, REVOKED_KEY, tenantCrlName } from "../../src/desired/revocation.js";
import type { KubeObject } from "../../src/runtime/kube-object.js";
import { adminConnection } from "../harness/mosquitto.js";
import type { StackEnv } from "../harness/stack.js";
import { kubectlOn } from "./kubectl.js";

/** Where the state is read: the shared stack by default, or a test's own cluster and broker. */
export interface StateSource extends Pick<StackEnv, "binDir" | "kubeconfig"> {
  readonly broker: DynsecConnection;
}

export function sharedStack(): StateSource {
  const stack = inject("stack");
  return { binDir: stack.binDir, kubeconfig: stack.kubeconfig, broker: adminConnection(stack.broker) };
}

async function getJson<T>(on: StateSource, args: readonly string[]): Promise<T> {
  const result = await kubectlOn(on, ["get", ...args, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  return JSON.parse(result.stdout) as T;
}

/** Names of the objects of `kind` that `kubectl get` lists with these arguments. */
export async function names(kind: string, args: readonly string[], on = sharedStack()): Promise<string[]> {
  const result = await kubectlOn(on, ["get", kind, ...args, "-o", "jsonpath={.items[*].metadata.name}"]);
  if (!result.ok) throw new Error(result.stderr);
  return result.stdout.split(" ").filter(Boolean).sort();
}

/** A Secret's decoded data in the operator's namespace, or undefined when it does not exist. */
async function operatorSecret(on: StateSource, name: string): Promise<Record<string, string> | undefined> {
  const result = await kubectlOn(on, ["get", "secret", name, "-n", "iot-system", "-o", "json"]);
  if (!result.ok) {
    if (/NotFound/.test(result.stderr)) return undefined;
    throw new Error(result.stderr);
  }
  const data = (JSON.parse(result.stdout) as { data?: Record<string, string> }).data ?? {};
  return Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
}

/** The serials on a tenant's revocation list, as its CRL Secret records them (duplicates kept). */
export async function revokedSerials(tenant: string, on = sharedStack()): Promise<string[]> {
  const crl = await operatorSecret(on, tenantCrlName(tenant));
  const revoked = JSON.parse(crl?.[REVOKED_KEY] ?? "[]") as Array<{ serialNumber: string }>;
  return revoked.map((r) => r.serialNumber);
}

/** The serial of the certificate cert-manager issued for a device, or undefined while there is none. */
export async function issuedSerial(
  tenant: string,
  device: string,
  on = sharedStack(),
): Promise<string | undefined> {
  const pem = (await operatorSecret(on, `${tenant}.${device}`))?.["tls.crt"];
  return pem ? describeCertificate(pem).serialNumber : undefined;
}

/** A tenant's dynsec clients (username, textname, roles) and roles, as the broker lists them. */
export async function brokerStateOf(
  tenant: string,
  connection: DynsecConnection,
): Promise<{
  clients: Array<{ username: string; textname: string; roles: string[] }>;
  roles: Array<{ rolename: string; acls: Acl[] }>;
}> {
  const admin = await DynsecClient.connect(connection);
  try {
    const prefix = `iot:${tenant}:`;
    const listedRoles = (await admin.run({ command: "listRoles", verbose: true })) as {
      roles: Array<{ rolename: string; acls?: Acl[] }>;
    };
    const listedClients = (await admin.run({ command: "listClients", verbose: true })) as {
      clients: Array<{ username: string; textname?: string; roles?: Array<{ rolename: string }> }>;
    };
    return {
      clients: listedClients.clients
        .filter((c) => c.textname?.startsWith(prefix))
        .map((c) => ({
          username: c.username,
          textname: c.textname ?? "",
          roles: (c.roles ?? []).map((r) => r.rolename).sort(),
        }))
        .sort((x, y) => x.textname.localeCompare(y.textname)),
      roles: listedRoles.roles
        .filter((r) => r.rolename.startsWith(prefix))
        .map((r) => ({ rolename: r.rolename, acls: r.acls ?? [] }))
        .sort((x, y) => x.rolename.localeCompare(y.rolename)),
    };
  } finally {
    await admin.close();
  }
}

/**
 * Everything that differs between a tenant's cluster objects, CRL and broker entries and the
 * desired state: `kept` Devices Ready at their generation with one certificate, one mirrored Secret
 * and one broker client holding exactly its own role, which grants exactly its topics; nothing left of `gone` Devices but their
 * serials on the CRL; no serial in use revoked, none listed twice, no revocation record pending.
 * Empty when the state is exactly the desired one.
 */
export async function differencesFromDesired(
  tenant: string,
  kept: readonly string[],
  revoked: readonly string[],
  on = sharedStack(),
): Promise<string[]> {
  const problems: string[] = [];
  const expect = (what: string, actual: unknown, wanted: unknown) => {
    if (JSON.stringify(actual) !== JSON.stringify(wanted))
      problems.push(`${what}: ${JSON.stringify(actual)} != ${JSON.stringify(wanted)}`);
  };
  const sortedKept = [...kept].sort();
  const tenantObject = await getJson<KubeObject>(on, ["tenant", tenant]);
  const devices = await getJson<{
    items: Array<{
      apiVersion: string;
      kind: string;
      metadata: { name: string; generation?: number; deletionTimestamp?: string };
      status?: {
        observedGeneration?: number;
        username?: string;
        certificate?: { serialNumber?: string };
        conditions?: Array<{ type: string; status: string }>;
      };
    }>;
  }>(on, ["devices", "-n", tenant]);
  expect(
    "Devices",
    devices.items.map((d) => d.metadata.name),
    sortedKept,
  );
  const notReady = devices.items.filter(
    (d) =>
      d.status?.observedGeneration !== d.metadata.generation ||
      !d.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
  );
  expect(
    "Devices not Ready at their generation",
    notReady.map((d) => d.metadata.name),
    [],
  );
  const tenantLabel = `${TENANT_LABEL}=${tenant}`;
  const byTenant = ["-n", "iot-system", "-l", tenantLabel];
  expect(
    "Certificates",
    await names("certificates", byTenant, on),
    sortedKept.map((d) => `${tenant}.${d}`).sort(),
  );
  expect(
    "pending revocation records",
    await names("secrets", ["-n", "iot-system", "-l", `${tenantLabel},${REVOCATION_LABEL}`], on),
    [],
  );
  expect(
    "mirrored Secrets",
    (await names("secrets", ["-n", tenant], on)).filter((n) => n.endsWith("-mqtt")),
    sortedKept.map((d) => `${d}-mqtt`).sort(),
  );
  const onCrl = await revokedSerials(tenant, on);
  expect("serials listed twice on the CRL", onCrl.length, new Set(onCrl).size);
  expect(
    "revoked serials missing from the CRL",
    revoked.filter((s) => !onCrl.includes(s)),
    [],
  );
  const inUse = devices.items.map((d) => d.status?.certificate?.serialNumber ?? "");
  for (const device of sortedKept) {
    const serial = await issuedSerial(tenant, device, on);
    const status = devices.items.find((d) => d.metadata.name === device)?.status;
    if (serial !== status?.certificate?.serialNumber)
      problems.push(`${device}: status serial ${status?.certificate?.serialNumber} != issued ${serial}`);
  }
  expect(
    "serials in use on the CRL",
    inUse.filter((s) => onCrl.includes(s)),
    [],
  );
  const broker = await brokerStateOf(tenant, on.broker);
  const owners = sortedKept.map((d) => `iot:${tenant}:${d}`);
  expect(
    "broker roles",
    broker.roles.map((r) => r.rolename),
    owners,
  );
  // Each role grants exactly what the Device's spec asks for, computed as the operator computes it.
  for (const device of devices.items) {
    const role = broker.roles.find((r) => r.rolename === `iot:${tenant}:${device.metadata.name}`);
    const desired = desiredDevice(
      DEFAULT_OWNER_PREFIX,
      brokerDevice(parseDeviceObject(device as KubeObject), parseTenantObject(tenantObject), {
        type: "x509",
        username: device.status?.username ?? "",
      }),
    );
    if (role && !sameAcls(role.acls, desired.acls))
      problems.push(`${role.rolename}: ACLs ${JSON.stringify(role.acls)} != ${JSON.stringify(desired.acls)}`);
  }
  expect(
    "broker clients",
    broker.clients.map((c) => ({ username: c.username, textname: c.textname, roles: c.roles })),
    sortedKept.map((d) => {
      const status = devices.items.find((x) => x.metadata.name === d)?.status;
      // Every device client holds its tenant's gate role and its own.
      const roles = [gateName(DEFAULT_OWNER_PREFIX, tenant), `iot:${tenant}:${d}`].sort();
      return { username: status?.username, textname: `iot:${tenant}:${d}`, roles };
    }),
  );
  return problems;
}
