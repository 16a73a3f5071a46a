import { readdir, readFile } from "node:fs/promises";
import mqtt from "mqtt";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { helm } from "../../test/support/helm.js";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { applyDevice, applyManifest, deviceTls, readyDevice } from "../../test/support/operator.js";
import { API_VERSION, OPERATOR_NAMESPACE } from "../api/group.js";
import { TenantObjectName } from "../desired/tenant.js";
import { probeOptions } from "../verify/mqtt-probe.js";
import { CHART_DIR } from "./chart.js";

const RELEASE = "iot";
const DEPLOYMENT = "iot-tenant-operator";
const LEASE = "iot-tenant-operator";

/** Pod names of the operator's replicas that are Ready (their /readyz answered). */
async function readyReplicas(): Promise<string[]> {
  const { stdout } = await kubectl([
    "get",
    "pods",
    "-n",
    OPERATOR_NAMESPACE,
    "-l",
    `app.kubernetes.io/name=${DEPLOYMENT}`,
    "-o",
    "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
  ]);
  return stdout
    .split("\n")
    .map((line) => line.split(" "))
    .filter(([, deleting, ready]) => deleting === "" && ready === "True")
    .map(([name]) => name ?? "");
}

/** The memory maps of this host's processes that run the image's entry point (the node's containers). */
async function operatorImageProcessMaps(): Promise<string[]> {
  const maps: string[] = [];
  for (const pid of (await readdir("/proc")).filter((entry) => /^\d+$/.test(entry))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.split("\0").includes("/app/bin/iot-tenant-operator.js")) continue;
    const map = await readFile(`/proc/${pid}/maps`, "utf8").catch(() => undefined);
    if (map !== undefined) maps.push(map);
  }
  return maps;
}

/** "repository:tag" of an image reference. */
function splitRef(ref: string): [string, string] {
  const separator = ref.lastIndexOf(":");
  return [ref.slice(0, separator), ref.slice(separator + 1)];
}

async function leader(): Promise<string> {
  const { stdout } = await kubectl([
    "get",
    "lease",
    "-n",
    OPERATOR_NAMESPACE,
    LEASE,
    "-o",
    "jsonpath={.spec.holderIdentity}",
  ]);
  return stdout;
}

/**
 * `helm install` for real: the chart's Deployment runs the operator image (built by
 * test/tools/build-images.sh, imported into the node's containerd) as two replicas on a real
 * node, in a namespace that enforces the restricted Pod Security level, with the chart's broker.
 */
describe("helm install on a real node", () => {
  const image = inject("stack").node?.images.operator ?? "";
  const brokerImage = inject("stack").node?.images.mosquitto ?? "";
  const tenant = uniqueName("helm");

  beforeAll(async () => {
    const labelled = await kubectl([
      "label",
      "--overwrite",
      "namespace",
      OPERATOR_NAMESPACE,
      "pod-security.kubernetes.io/enforce=restricted",
    ]);
    if (!labelled.ok) throw new Error(labelled.stderr);
    const [repository, tag] = splitRef(image);
    const [brokerRepository, brokerTag] = splitRef(brokerImage);
    await helm([
      "install",
      RELEASE,
      CHART_DIR,
      "--namespace",
      OPERATOR_NAMESPACE,
      // Other test files install the same cluster objects with the operator's own `install`.
      "--take-ownership",
      "--set",
      `image.repository=${repository},image.tag=${tag},image.pullPolicy=Never`,
      "--set",
      `broker.image.repository=${brokerRepository},broker.image.tag=${brokerTag},broker.image.pullPolicy=Never`,
      // The audit-log sidecar needs only `tail`: the probe image's busybox has it, and nothing is pulled here.
      "--set",
      `auditLog.image=${inject("stack").node?.images.probe ?? ""}`,
    ]);
  }, 360_000);

  afterAll(async () => {
    await kubectl(["delete", "tenant", tenant, "--wait=false"]);
    // The release stays with the stack; its operator stops, so it never competes with another
    // file's operator. (An uninstall deletes the tenant admission policy's parameters, and the
    // API server kept refusing Tenants for lack of them after the next file re-created them.)
    await kubectl(["scale", "deployment", "-n", OPERATOR_NAMESPACE, DEPLOYMENT, "--replicas=0"]);
    await eventually(
      "the operator's pods gone",
      async () =>
        (
          await kubectl([
            "get",
            "pods",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            `app.kubernetes.io/name=${DEPLOYMENT}`,
            "-o",
            "name",
          ])
        ).stdout.trim() === "" || undefined,
      120_000,
    );
    await kubectl(["label", "namespace", OPERATOR_NAMESPACE, "pod-security.kubernetes.io/enforce-"]);
  }, 180_000);

  it("runs two Ready replicas of the operator image, one of them leading", async () => {
    const replicas = await eventually(
      "two Ready replicas",
      async () => {
        const ready = await readyReplicas();
        return ready.length === 2 ? ready : undefined;
      },
      200_000,
    ).catch(async (error: Error) => {
      // What the pods are waiting on, so a failure says why.
      const pods = await kubectl(["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json"]);
      const states = (
        JSON.parse(pods.stdout || "{}") as {
          items?: Array<{ metadata: { name: string }; status?: { containerStatuses?: unknown[] } }>;
        }
      ).items?.map((p) => `${p.metadata.name}: ${JSON.stringify(p.status?.containerStatuses)}`);
      throw new Error(`${error.message}\n${states?.join("\n")}`);
    });
    const holder = await eventually("a leader", async () => (await leader()) || undefined, 60_000);
    expect(replicas.filter((pod) => holder.startsWith(`${pod}-`))).toHaveLength(1);
    // The image preloads jemalloc: glibc's malloc kept freed native memory resident (README, limits).
    const maps = await operatorImageProcessMaps();
    expect(maps.length).toBeGreaterThanOrEqual(2);
    for (const map of maps) expect(map).toContain("/usr/local/lib/libjemalloc.so.2");
  }, 300_000);

  it("reconciles a Tenant from inside the cluster and serves its device through the chart's broker", async () => {
    await applyManifest({ apiVersion: API_VERSION, kind: "Tenant", metadata: { name: tenant }, spec: {} });
    // Accepted once the operator has made the tenant's namespace.
    await eventually("the Device accepted", () => applyDevice(tenant, "sensor").then(() => true), 120_000);
    // Ready includes the broker: the in-cluster operator reached the chart's Mosquitto by its
    // Service name (cluster DNS) and gave it the tenant's roles. Generous: the broker pod starts
    // once the operator has published the first CRL (kubelet retries a missing Secret volume with
    // backoff), and the operator retries the broker with backoff.
    await eventually(
      `Tenant ${tenant} Ready`,
      async () =>
        (
          await kubectl([
            "get",
            "tenant",
            tenant,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
          ])
        ).stdout === "True" || undefined,
      280_000,
    );
    const policies = await kubectl(["get", "networkpolicy", "-n", tenant, "-o", "name"]);
    expect(policies.stdout).toContain(`networkpolicy.networking.k8s.io/${TenantObjectName.defaultDeny}`);
    await readyDevice(tenant, "sensor");
    const tls = await deviceTls(tenant, "sensor");
    const { stdout: address } = await kubectl([
      "get",
      "service",
      "-n",
      OPERATOR_NAMESPACE,
      "mosquitto",
      "-o",
      "jsonpath={.spec.clusterIP}",
    ]);
    // Through kube-proxy's rules for the Service, verifying the broker's name as a device does.
    const connectDevice = () =>
      mqtt.connectAsync(probeOptions(address, 8883, { ...tls, servername: "mosquitto" }));
    // Until kubelet has refreshed the broker's CRL volume with this tenant's CRL and the sidecar has
    // reloaded it, the broker cannot check the chain ("unknown ca").
    const client = await eventually(
      "the device connects through the Service",
      () => connectDevice(),
      180_000,
    );
    await client.endAsync(true);
    // Revoked: the operator rewrites the combined CRL Secret, the broker pod's sidecar SIGHUPs mosquitto.
    expect((await kubectl(["delete", "device", "-n", tenant, "sensor", "--wait=false"])).ok).toBe(true);
    await eventually(
      "the broker refuses the revoked certificate in the handshake",
      () =>
        connectDevice().then(
          async (c) => {
            await c.endAsync(true);
            return undefined;
          },
          (error: Error) => (/revoked/.test(error.message) ? true : undefined),
        ),
      180_000,
    );
  }, 720_000);

  it("hands the lease to the standby when the leader's pod goes", async () => {
    const before = await eventually("a leader", async () => (await leader()) || undefined, 60_000);
    const pod = (await readyReplicas()).find((name) => before.startsWith(`${name}-`));
    expect(pod).toBeDefined();
    await kubectl(["delete", "pod", "-n", OPERATOR_NAMESPACE, pod ?? "", "--wait=false"]);
    const after = await eventually(
      "another replica leads",
      async () => {
        const holder = await leader();
        return holder && holder !== before ? holder : undefined;
      },
      120_000,
    );
    expect(after.startsWith(`${pod}-`)).toBe(false);
  });
});
