import type { KubeConfig } from "@kubernetes/client-node";
import { inject } from "vitest";
import { API_VERSION } from "../../src/api/group.js";
import { type OperatorConfig, operatorConfigSchema } from "../../src/config.js";
import { Resource } from "../../src/controllers/resources.js";
import { install } from "../../src/install.js";
import { createLogger } from "../../src/observability/logger.js";
import { type RunningOperator, startOperator } from "../../src/operator.js";
import { KubeApiError, KubeClient } from "../../src/runtime/kube-client.js";
import { resourcePath } from "../../src/runtime/kube-object.js";
import { stackVariables } from "../harness/stack.js";
import { adminKubeConfig, eventually } from "./kube.js";
import { kubectl } from "./kubectl.js";
import type { TlsMaterial } from "./mqtt.js";

export const TEST_TENANT_PRIORITY_CLASS = "iot-tenant-low";
export const TEST_INGRESS_DOMAIN = "apps.test";

/** The operator's configuration for the test stack. */
export function stackOperatorConfig(overrides: Record<string, string> = {}): OperatorConfig {
  return operatorConfigSchema.parse({
    ...stackVariables(inject("stack")),
    PROBE_BIND_ADDRESS: "127.0.0.1:0",
    LOG_LEVEL: process.env.OPERATOR_LOG_LEVEL ?? "warn",
    // One set of tenant allow-lists for every test: the admission policy is cluster-wide.
    TENANT_PRIORITY_CLASSES: TEST_TENANT_PRIORITY_CLASS,
    TENANT_INGRESS_DOMAIN: TEST_INGRESS_DOMAIN,
    ...overrides,
  });
}

/** Installs the CRDs and cluster objects, then runs the real operator in this process against the stack. */
export async function startTestOperator(
  config: OperatorConfig = stackOperatorConfig(),
  options: {
    logLines?: string[];
    brokerResyncIntervalMs?: number;
    brokerPacing?: number;
    kubeConfig?: KubeConfig;
  } = {},
): Promise<RunningOperator> {
  const { logLines, brokerResyncIntervalMs, brokerPacing, kubeConfig = adminKubeConfig() } = options;
  await install(new KubeClient(kubeConfig), config);
  return startOperator({
    kubeConfig,
    config,
    // Captured logs are read at the most verbose level, to prove what never appears in them.
    logger: logLines
      ? createLogger({ level: "trace", destination: { write: (line: string) => logLines.push(line) } })
      : createLogger({ level: config.LOG_LEVEL }),
    leaderElection: false,
    informerDefaults: { retryInitialMs: 100, retryMaxMs: 2_000 },
    ...(brokerResyncIntervalMs ? { brokerResyncIntervalMs } : {}),
    ...(brokerPacing !== undefined ? { brokerPacing } : {}),
  });
}

/** Server-side applies a manifest as the platform team would (kubectl, its own field manager). */
export async function applyManifest(manifest: unknown): Promise<void> {
  const result = await kubectl(["apply", "--server-side", "--field-manager=platform-team", "-f", "-"], {
    stdin: JSON.stringify(manifest),
  });
  if (!result.ok) throw new Error(result.stderr);
}

/** Applies a Tenant and waits until it is Ready: only then does the API server accept its Devices. */
export async function applyReadyTenant(name: string, spec: Record<string, unknown> = {}): Promise<void> {
  await applyManifest({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name }, spec });
  await eventually(
    `Tenant ${name} Ready`,
    async () => {
      const result = await kubectl([
        "get",
        "tenant",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
      ]);
      return result.stdout === "True" ? true : undefined;
    },
    90_000,
  );
}

export function applyDevice(
  namespace: string,
  name: string,
  spec: Record<string, unknown> = {},
): Promise<void> {
  return applyManifest({ apiVersion: API_VERSION, kind: "Device", metadata: { name, namespace }, spec });
}

export interface DeviceStatus {
  username?: string;
  secretName?: string;
  certificate?: { serialNumber?: string; notAfter?: string; sha256?: string };
  conditions?: Array<{ type: string; status: string; reason: string }>;
}

export type DeviceCondition = NonNullable<DeviceStatus["conditions"]>[number] & { message?: string };

/** The conditions of every Device of `namespace`, by name, in one read. */
export async function deviceConditions(namespace: string): Promise<Map<string, DeviceCondition[]>> {
  const result = await kubectl(["get", "devices", "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const list = JSON.parse(result.stdout) as {
    items: Array<{ metadata: { name: string }; status?: { conditions?: DeviceCondition[] } }>;
  };
  return new Map(list.items.map((d) => [d.metadata.name, d.status?.conditions ?? []]));
}

export const conditionOf = (conditions: readonly DeviceCondition[] | undefined, type: string) =>
  conditions?.find((c) => c.type === type);

export function readyDevice(namespace: string, name: string): Promise<DeviceStatus> {
  return eventually(
    `Device ${namespace}/${name} Ready`,
    async () => {
      const result = await kubectl(["get", "device", name, "-n", namespace, "-o", "json"]);
      if (!result.ok) return undefined;
      const status = (JSON.parse(result.stdout) as { status?: DeviceStatus }).status;
      return status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? status : undefined;
    },
    90_000,
  );
}

/** Waits until the Device's Ready condition carries `reason` (e.g. Disabled, DeviceLimitReached). */
export function deviceReadyReason(namespace: string, name: string, reason: string): Promise<true> {
  return eventually(`Device ${namespace}/${name} ${reason}`, async () => {
    const result = await kubectl([
      "get",
      "device",
      name,
      "-n",
      namespace,
      "-o",
      "jsonpath={.status.conditions[?(@.type=='Ready')].reason}",
    ]);
    return result.stdout === reason ? true : undefined;
  });
}

/** Waits until the Device's status describes its current generation and it is Ready: its broker grant is in place. */
export function readyAtCurrentGeneration(namespace: string, name: string): Promise<DeviceStatus> {
  return eventually(
    `Device ${namespace}/${name} Ready at its current generation`,
    async () => {
      const result = await kubectl(["get", "device", name, "-n", namespace, "-o", "json"]);
      if (!result.ok) return undefined;
      const device = JSON.parse(result.stdout) as {
        metadata: { generation?: number };
        status?: DeviceStatus & { observedGeneration?: number };
      };
      const { status } = device;
      return status?.observedGeneration === device.metadata.generation &&
        status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")
        ? status
        : undefined;
    },
    90_000,
  );
}

/** A Secret's data, decoded. */
export async function secretData(namespace: string, name: string): Promise<Record<string, string>> {
  const result = await kubectl(["get", "secret", name, "-n", namespace, "-o", "json"]);
  if (!result.ok) throw new Error(result.stderr);
  const data = (JSON.parse(result.stdout) as { data: Record<string, string> }).data;
  return Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
  );
}

export async function deviceTls(namespace: string, name: string): Promise<TlsMaterial> {
  const data = await secretData(namespace, `${name}-mqtt`);
  return { ca: data["ca.crt"] ?? "", cert: data["tls.crt"] ?? "", key: data["tls.key"] ?? "" };
}

/**
 * What a tenant admin can do to a Device: strip the operator's finalizer, then delete it before the
 * operator puts the finalizer back. The delete is conditional on the stripped version, so a finalizer
 * re-added in between makes it fail and the attempt starts over: the Device goes without its finalizer.
 */
export async function deleteWithoutFinalizers(
  as: KubeClient,
  namespace: string,
  name: string,
): Promise<void> {
  const path = resourcePath(Resource.device, { namespace, name });
  for (let attempt = 0; attempt < 20; attempt++) {
    const stripped = (await as.request({
      verb: "patch",
      method: "PATCH",
      path,
      contentType: "application/json-patch+json",
      body: [{ op: "remove", path: "/metadata/finalizers" }],
    })) as { metadata: { resourceVersion: string } };
    try {
      await as.request({
        verb: "delete",
        method: "DELETE",
        path,
        body: { apiVersion: "v1", kind: "DeleteOptions", preconditions: stripped.metadata },
      });
      return;
    } catch (error) {
      if (!(error instanceof KubeApiError && error.code === 409)) throw error;
    }
  }
  throw new Error(`${namespace}/${name}: the finalizer came back before every delete`);
}
