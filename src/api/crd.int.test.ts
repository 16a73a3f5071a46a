import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  ApiException,
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubernetesObject,
} from "@kubernetes/client-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { adminKubeConfig, eventually, objectApi, uniqueName } from "../../test/support/kube.js";
import { RESOURCES } from "./crd.js";
import { deviceSchema } from "./device.js";
import { API_GROUP, API_VERSION, API_VERSION_NAME } from "./group.js";
import { tenantSchema } from "./tenant.js";
import { TOPIC_FILTER_MAX_DEPTH, TOPIC_FILTER_MAX_LENGTH, topicFilterProblem } from "./topics.js";

const run = promisify(execFile);
const repoRoot = join(import.meta.dirname, "../..");

type Manifest = KubernetesObject & { spec?: Record<string, unknown>; status?: Record<string, unknown> };

const kc = adminKubeConfig();
const objects = objectApi(kc);

async function kubectl(...args: string[]): Promise<string> {
  const { binDir, kubeconfig } = inject("stack");
  const { stdout } = await run(join(binDir, "kubectl"), [`--kubeconfig=${kubeconfig}`, ...args]);
  return stdout;
}

/** The API server's message when it refuses `attempt`; fails the test when it accepts. */
async function refusal(attempt: Promise<unknown>): Promise<string> {
  try {
    await attempt;
  } catch (error) {
    if (error instanceof ApiException && error.code === 422) {
      return (JSON.parse(error.body as string) as { message: string }).message;
    }
    throw error;
  }
  throw new Error("the API server accepted the object");
}

const dryRun = (manifest: Manifest) => objects.create(manifest, undefined, "All");

let deviceNamespace: string;

const tenant = (spec: Record<string, unknown> = {}, name = uniqueName("tenant")): Manifest => ({
  apiVersion: API_VERSION,
  kind: "Tenant",
  metadata: { name },
  spec,
});

const device = (spec: Record<string, unknown> = {}, name = uniqueName("device")): Manifest => ({
  apiVersion: API_VERSION,
  kind: "Device",
  metadata: { name, namespace: deviceNamespace },
  spec,
});

beforeAll(async () => {
  await kubectl("apply", "--server-side", "-f", join(repoRoot, "crds"));
  const crds = kc.makeApiClient(ApiextensionsV1Api);
  for (const { plural } of RESOURCES) {
    await eventually(`${plural} CRD established`, async () => {
      const crd = await crds.readCustomResourceDefinition({ name: `${plural}.${API_GROUP}` });
      return crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")
        ? true
        : undefined;
    });
  }
  deviceNamespace = uniqueName("api-devices");
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: deviceNamespace } } });
});

afterAll(async () => {
  await kc.makeApiClient(CoreV1Api).deleteNamespace({ name: deviceNamespace });
});

describe("examples/", () => {
  it("every example is accepted by the API server and by zod, with the same defaults", async () => {
    const files = (await readdir(join(repoRoot, "examples"), { recursive: true })).filter((file) =>
      file.endsWith(".yaml"),
    );
    const manifests = (
      await Promise.all(
        files.map(async (file) =>
          parseAllDocuments(await readFile(join(repoRoot, "examples", file), "utf8")),
        ),
      )
    )
      .flat()
      .map((document) => document.toJS() as Manifest)
      .filter((manifest) => manifest !== null);
    // The example: a tenant, three devices, an application identity reading the whole tree and
    // the device `verify` probes the broker with.
    const acme = manifests.filter((m) => m.metadata?.name === "acme" || m.metadata?.namespace === "acme");
    expect(acme.map((m) => m.kind).sort()).toEqual([
      "Device",
      "Device",
      "Device",
      "Device",
      "Device",
      "Tenant",
    ]);
    expect(acme.some((m) => (m.spec?.topics as { subscribe?: string[] })?.subscribe?.includes("#"))).toBe(
      true,
    );

    for (const manifest of manifests) {
      const schema = manifest.kind === "Tenant" ? tenantSchema : deviceSchema;
      const parsed = schema.safeParse(manifest);
      expect(parsed.error).toBeUndefined();
      // Devices are tried in this file's namespace: the tenant's would need the operator, and the schema
      // does not depend on the namespace. Dry runs leave nothing behind in the shared cluster.
      const namespace = manifest.metadata?.namespace && deviceNamespace;
      const accepted = (await dryRun({
        ...manifest,
        metadata: { ...manifest.metadata, namespace },
      })) as Manifest;
      expect(accepted.spec).toEqual(parsed.data?.spec);
    }
  });
});

describe("defaults", () => {
  it.each([
    ["Tenant", () => tenant()],
    ["Device", () => device()],
    ["password Device", () => device({ authentication: { type: "password" }, topics: {} })],
  ] as const)("the API server defaults an empty %s exactly as zod does", async (_, manifest) => {
    const minimal = manifest();
    const schema = minimal.kind === "Tenant" ? tenantSchema : deviceSchema;
    const accepted = (await dryRun(minimal)) as Manifest;
    expect(accepted.spec).toEqual(schema.parse(minimal).spec);
  });
});

interface RefusedCase {
  readonly what: string;
  readonly manifest: () => Manifest;
  /** The field that the error message must name. */
  readonly field: string;
}

const longName = "x".repeat(64);
const ports = (port: number, protocol = "TCP") => ({ network: { egressPorts: [{ port, protocol }] } });

const refusedOnCreate: readonly RefusedCase[] = [
  { what: "tenant named kube-*", manifest: () => tenant({}, "kube-fleet"), field: "metadata.name" },
  { what: "tenant named default", manifest: () => tenant({}, "default"), field: "metadata.name" },
  {
    what: "tenant named like the operator's namespace",
    manifest: () => tenant({}, "iot-system"),
    field: "metadata.name",
  },
  { what: "tenant name with a dot", manifest: () => tenant({}, "acme.corp"), field: "metadata.name" },
  { what: "tenant name longer than 63", manifest: () => tenant({}, longName), field: "metadata.name" },
  {
    what: "namespace listed twice",
    manifest: () => tenant({ namespaces: ["shop", "shop"] }),
    field: "spec.namespaces[1]",
  },
  {
    what: "kube-system as namespace",
    manifest: () => tenant({ namespaces: ["kube-system"] }),
    field: "spec.namespaces[0]",
  },
  {
    what: "operator namespace",
    manifest: () => tenant({ namespaces: ["ok", "iot-system"] }),
    field: "spec.namespaces[1]",
  },
  {
    what: "namespace not a DNS label",
    manifest: () => tenant({ namespaces: ["Bad_NS"] }),
    field: "spec.namespaces[0]",
  },
  { what: "empty namespace list", manifest: () => tenant({ namespaces: [] }), field: "spec.namespaces" },
  {
    what: "17 namespaces",
    manifest: () => tenant({ namespaces: Array.from({ length: 17 }, (_, i) => `ns-${i}`) }),
    field: "spec.namespaces",
  },
  {
    what: "ServiceAccount admin without namespace",
    manifest: () => tenant({ admins: [{ kind: "ServiceAccount", name: "deployer" }] }),
    field: "spec.admins[0].namespace",
  },
  {
    what: "User admin with namespace",
    manifest: () => tenant({ admins: [{ kind: "User", name: "jane", namespace: "x" }] }),
    field: "spec.admins[0].namespace",
  },
  {
    what: "unknown admin kind",
    manifest: () => tenant({ admins: [{ kind: "Robot", name: "r2" }] }),
    field: "spec.admins[0].kind",
  },
  {
    what: "CIDR with prefix 33",
    manifest: () => tenant({ network: { allowEgressCIDRs: ["10.0.0.0/33"] } }),
    field: "spec.network.allowEgressCIDRs[0]",
  },
  {
    what: "host name as CIDR",
    manifest: () => tenant({ network: { allowEgressCIDRs: ["192.0.2.0/24", "example.com"] } }),
    field: "spec.network.allowEgressCIDRs[1]",
  },
  { what: "port 0", manifest: () => tenant(ports(0)), field: "spec.network.egressPorts[0].port" },
  {
    what: "ICMP port",
    manifest: () => tenant(ports(443, "ICMP")),
    field: "spec.network.egressPorts[0].protocol",
  },
  {
    what: "port listed twice",
    manifest: () => tenant({ network: { egressPorts: [{ port: 443 }, { port: 443, protocol: "TCP" }] } }),
    field: "spec.network.egressPorts[1]",
  },
  {
    what: "wildcard in topic root",
    manifest: () => tenant({ broker: { topicRoot: "tenants/+" } }),
    field: "spec.broker.topicRoot",
  },
  {
    what: "$ topic root",
    manifest: () => tenant({ broker: { topicRoot: "$SYS/acme" } }),
    field: "spec.broker.topicRoot",
  },
  {
    what: "topic root with a leading /",
    manifest: () => tenant({ broker: { topicRoot: "/tenants/acme" } }),
    field: "spec.broker.topicRoot",
  },
  {
    what: "topic root of 9 levels",
    manifest: () => tenant({ broker: { topicRoot: "a/b/c/d/e/f/g/h/i" } }),
    field: "spec.broker.topicRoot",
  },
  {
    what: "negative maxDevices",
    manifest: () => tenant({ devices: { maxDevices: -1 } }),
    field: "spec.devices.maxDevices",
  },
  {
    what: "renewBefore not shorter than duration",
    manifest: () => tenant({ devices: { certificate: { duration: "720h", renewBefore: "720h" } } }),
    field: "spec.devices.certificate.renewBefore",
  },
  {
    what: "default renewBefore longer than a short duration",
    manifest: () => tenant({ devices: { certificate: { duration: "24h" } } }),
    field: "spec.devices.certificate.renewBefore",
  },
  {
    what: "duration in days",
    manifest: () => tenant({ devices: { certificate: { duration: "90d" } } }),
    field: "spec.devices.certificate.duration",
  },
  {
    what: "duration under 24h",
    manifest: () => tenant({ devices: { certificate: { duration: "23h", renewBefore: "1h" } } }),
    field: "spec.devices.certificate.duration",
  },
  {
    what: "renewBefore under 1h",
    manifest: () => tenant({ devices: { certificate: { duration: "24h", renewBefore: "59m" } } }),
    field: "spec.devices.certificate.renewBefore",
  },
  {
    what: "renewBefore over half of duration",
    manifest: () => tenant({ devices: { certificate: { duration: "48h", renewBefore: "25h" } } }),
    field: "spec.devices.certificate.renewBefore",
  },
  {
    what: "unknown key algorithm",
    manifest: () => tenant({ devices: { certificate: { keyAlgorithm: "DSA" } } }),
    field: "spec.devices.certificate.keyAlgorithm",
  },
  {
    what: "quota that is not a quantity",
    manifest: () => tenant({ quota: { hard: { pods: "lots" } } }),
    field: "spec.quota.hard.pods",
  },
  { what: "suspended as a string", manifest: () => tenant({ suspended: "yes" }), field: "spec.suspended" },
  { what: "device name with a dot", manifest: () => device({}, "sensor.1"), field: "metadata.name" },
  {
    what: "unknown authentication type",
    manifest: () => device({ authentication: { type: "token" } }),
    field: "spec.authentication.type",
  },
  {
    what: "$SYS filter",
    manifest: () => device({ topics: { publish: ["$SYS/#"] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "# not last",
    manifest: () => device({ topics: { publish: ["a/#/b"] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "# inside a level",
    manifest: () => device({ topics: { subscribe: ["a/b#"] } }),
    field: "spec.topics.subscribe[0]",
  },
  {
    what: "+ inside a level",
    manifest: () => device({ topics: { subscribe: ["ok", "a+/b"] } }),
    field: "spec.topics.subscribe[1]",
  },
  {
    what: "empty filter",
    manifest: () => device({ topics: { publish: [""] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "NUL in a filter",
    manifest: () => device({ topics: { publish: ["a\u0000b"] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "empty level",
    manifest: () => device({ topics: { publish: ["a//b"] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "filter deeper than the limit",
    manifest: () =>
      device({
        topics: {
          publish: [
            Array(TOPIC_FILTER_MAX_DEPTH + 1)
              .fill("l")
              .join("/"),
          ],
        },
      }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "filter longer than the limit",
    manifest: () => device({ topics: { publish: ["a".repeat(TOPIC_FILTER_MAX_LENGTH + 1)] } }),
    field: "spec.topics.publish[0]",
  },
  {
    what: "filter listed twice",
    manifest: () => device({ topics: { publish: ["a/b", "a/b"] } }),
    field: "spec.topics.publish[1]",
  },
  {
    what: "33 filters",
    manifest: () => device({ topics: { subscribe: Array.from({ length: 33 }, (_, i) => `t/${i}`) } }),
    field: "spec.topics.subscribe",
  },
  {
    what: "certificate settings on a password device",
    manifest: () =>
      device({ authentication: { type: "password" }, certificate: { duration: "24h", renewBefore: "1h" } }),
    field: "spec.certificate",
  },
  {
    what: "device renewBefore not shorter than duration",
    manifest: () => device({ certificate: { duration: "24h", renewBefore: "48h" } }),
    field: "spec.certificate.renewBefore",
  },
  {
    what: "device renewBefore over half of duration",
    manifest: () => device({ certificate: { duration: "24h", renewBefore: "13h" } }),
    field: "spec.certificate.renewBefore",
  },
  {
    what: "device duration under 24h",
    manifest: () => device({ certificate: { duration: "12h" } }),
    field: "spec.certificate.duration",
  },
  { what: "enabled as a string", manifest: () => device({ enabled: "no" }), field: "spec.enabled" },
];

describe("the API server refuses bad manifests, naming the field", () => {
  it.each(refusedOnCreate.map((c) => [c.what, c] as const))("%s", async (_, { manifest, field }) => {
    const bad = manifest();
    const message = await refusal(dryRun(bad));
    expect(message).toContain(`${field}: `);
    const schema = bad.kind === "Tenant" ? tenantSchema : deviceSchema;
    expect(schema.safeParse(bad).success, "zod accepts what the API server refuses").toBe(false);
  });

  const refusedOnUpdate: ReadonlyArray<{
    what: string;
    before: () => Manifest;
    after: (m: Manifest) => Manifest;
    field: string;
  }> = [
    {
      what: "changing spec.broker.topicRoot",
      before: () => tenant({ broker: { topicRoot: "fleet/one" } }),
      after: (m) => ({ ...m, spec: { broker: { topicRoot: "fleet/two" } } }),
      field: "spec.broker.topicRoot",
    },
    {
      what: "removing spec.broker.topicRoot that differs from the default",
      before: () => tenant({ broker: { topicRoot: "fleet/three" } }),
      after: (m) => ({ ...m, spec: {} }),
      field: "spec.broker.topicRoot",
    },
    {
      what: "setting spec.broker.topicRoot later to another root than the default",
      before: () => tenant(),
      after: (m) => ({ ...m, spec: { broker: { topicRoot: "fleet/four" } } }),
      field: "spec.broker.topicRoot",
    },
    {
      what: "changing spec.authentication.type",
      before: () => device({ authentication: { type: "x509" } }),
      after: (m) => ({ ...m, spec: { authentication: { type: "password" } } }),
      field: "spec.authentication.type",
    },
  ];

  it.each(refusedOnUpdate.map((c) => [c.what, c] as const))("%s", async (_, { before, after, field }) => {
    const created = await objects.create(before());
    try {
      const message = await refusal(objects.replace(after(created)));
      expect(message).toContain(`${field}: `);
    } finally {
      await objects.delete(created);
    }
  });

  it("accepts spelling out the default topic root later", async () => {
    const created = await objects.create(tenant());
    try {
      const name = created.metadata?.name ?? "";
      const updated = await objects.replace({
        ...created,
        spec: { broker: { topicRoot: `tenants/${name}` } },
      });
      expect((updated as Manifest).spec?.broker).toEqual({ topicRoot: `tenants/${name}` });
    } finally {
      await objects.delete(created);
    }
  });
});

describe("status subresource", () => {
  it("ignores status written through the main resource and takes it through /status", async () => {
    const status = { deviceCount: 7, topicRoot: "forged/root" };
    const created = (await objects.create({ ...tenant(), status })) as Manifest;
    const name = created.metadata?.name ?? "";
    try {
      expect(created.status).toBeUndefined();
      const replaced = (await objects.replace({ ...created, status })) as Manifest;
      expect(replaced.status).toBeUndefined();

      const custom = kc.makeApiClient(CustomObjectsApi);
      const written = (await custom.replaceClusterCustomObjectStatus({
        group: API_GROUP,
        version: API_VERSION_NAME,
        plural: "tenants",
        name,
        body: { ...replaced, status: { deviceCount: 2 } },
      })) as Manifest;
      expect(written.status).toEqual({ deviceCount: 2 });
    } finally {
      await objects.delete(created);
    }
  });
});

describe("kubectl", () => {
  it("explains tenant.spec.network and device topics with the schema's descriptions", async () => {
    const network = await eventually("explain published", async () =>
      kubectl("explain", "tenant.spec.network"),
    );
    expect(network).toContain("Network isolation of the tenant's namespaces");
    expect(network).toMatch(/allowFromNamespaces\s+<\[\]string>/);
    expect(network).toContain("Ports that allowEgressCIDRs opens");
    const subscribe = await kubectl("explain", "device.spec.topics.subscribe");
    expect(subscribe).toContain("subscribes to '#'");
  });

  it("finds the kinds by short name and category and prints their columns", async () => {
    const created = await objects.create(tenant());
    try {
      const tenants = await kubectl("get", "tn", created.metadata?.name ?? "");
      expect(tenants.split("\n")[0]?.split(/\s+/)).toEqual([
        "NAME",
        "READY",
        "REASON",
        "NAMESPACES",
        "DEVICES",
        "AGE",
      ]);
      const devices = await kubectl("get", "dev", "-n", deviceNamespace, "--ignore-not-found", "-o", "name");
      expect(devices).toBe("");
      const all = await kubectl("get", "iot", "-o", "name");
      expect(all).toContain(`tenant.${API_GROUP}/${created.metadata?.name}`);
    } finally {
      await objects.delete(created);
    }
  });
});

describe("topic filters: zod and the CRD's CEL rules agree", () => {
  const level = fc.oneof(
    fc.constantFrom("+", "#", "", "$SYS", "a+", "b#", "devices", "é", "😀"),
    fc.string({
      unit: fc.constantFrom("a", "z", "0", "-", "$", "+", "#", " ", "\u0000", "\n", "\u007f", "é", "😀"),
    }),
  );
  const structured = fc.array(level, { minLength: 1, maxLength: 6 }).map((l) => l.join("/"));
  // Valid levels around the depth limit, with or without a final '#'.
  const deep = fc
    .tuple(
      fc.array(fc.constantFrom("a", "+", "é", "😀", "x y", "a$b"), {
        minLength: TOPIC_FILTER_MAX_DEPTH - 2,
        maxLength: TOPIC_FILTER_MAX_DEPTH + 1,
      }),
      fc.boolean(),
    )
    .map(([levels, multiLevel]) => [...levels, ...(multiLevel ? ["#"] : [])].join("/"));
  const long = fc
    .tuple(
      fc.integer({ min: TOPIC_FILTER_MAX_LENGTH - 3, max: TOPIC_FILTER_MAX_LENGTH + 3 }),
      fc.constantFrom("a", "😀"),
    )
    .map(([length, char]) => char.repeat(length));
  const anyText = fc.string({ unit: "binary", maxLength: 40 });
  const filters = fc.oneof(structured, deep, long, anyText);

  it("on generated filters, the API server accepts exactly what topicFilterProblem accepts", async () => {
    const verdicts = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(filters, async (filter) => {
        const manifest = device({ topics: { publish: [filter] } });
        if (topicFilterProblem(filter) === undefined) {
          await dryRun(manifest);
          verdicts.accepted++;
        } else {
          expect(await refusal(dryRun(manifest))).toContain("spec.topics.publish[0]: ");
          verdicts.refused++;
        }
      }),
      { numRuns: 300 },
    );
    // Both verdicts must be well represented, or the property says little.
    expect(verdicts.accepted).toBeGreaterThan(30);
    expect(verdicts.refused).toBeGreaterThan(30);
  });
});
