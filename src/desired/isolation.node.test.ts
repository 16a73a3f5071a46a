import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import {
  connect,
  enforced,
  inProbe,
  type Outcome,
  PROBE_PORT,
  type Probe,
  startProbes,
} from "../../test/support/netprobe.js";
import {
  applyManifest,
  applyReadyTenant,
  stackOperatorConfig,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import type { RunningOperator } from "../operator.js";
import { TenantObjectName } from "./tenant.js";

/**
 * I1 with packets: Pods on a real node (containerd, CNI bridge) behind the NetworkPolicies the
 * operator made, enforced by kube-router's policy controller. Every outcome is a real TCP or UDP
 * exchange made inside a Pod; each denial has its allowed twin.
 */
/** The `kubernetes` Service's ClusterIP, which cluster DNS returns for its name. */
const KUBERNETES_SERVICE_IP = "10.0.0.1";

async function clusterDnsPod(): Promise<string> {
  const { stdout } = await kubectl([
    "get",
    "pods",
    "-n",
    "kube-system",
    "-l",
    "k8s-app=kube-dns",
    "-o",
    "jsonpath={.items[0].status.podIP}",
  ]);
  if (!stdout) throw new Error("no CoreDNS pod in kube-system");
  return stdout;
}

describe("I1 with packets: tenant network isolation on a real node", () => {
  const config = stackOperatorConfig();
  let operator: RunningOperator | undefined;
  // Tenant a spans two namespaces; b has one; n belongs to no tenant; m is the one a lets in.
  const a = uniqueName("pa");
  const b = uniqueName("pb");
  const [a1, a2, n, m] = [`${a}-1`, `${a}-2`, uniqueName("pn"), uniqueName("pm")];
  const probes: Record<string, Probe> = {};
  /** The address of the CoreDNS pod behind kube-system/kube-dns. */
  let dns = "";
  const at = (name: string): Probe => {
    const probe = probes[name];
    if (!probe) throw new Error(`no probe ${name}`);
    return probe;
  };
  const both = async (from: string, to: string, port = PROBE_PORT): Promise<Outcome[]> =>
    Promise.all((["tcp", "udp"] as const).map((protocol) => connect(at(from), protocol, at(to).ip, port)));
  const connected = (outcomes: Outcome[]) => outcomes.map((o) => o.connected);

  beforeAll(async () => {
    operator = await startTestOperator(config);
    // The admission policy's parameters may have just been re-created (another file's helm
    // uninstall removes them); the API server admits Tenants once it sees them again.
    await eventually(
      "the tenant admission policy has its parameters",
      async () =>
        (
          await kubectl(["create", "--dry-run=server", "-f", "-"], {
            stdin: JSON.stringify({
              apiVersion: API_VERSION,
              kind: "Tenant",
              metadata: { name: a },
              spec: {},
            }),
          })
        ).ok || undefined,
      60_000,
    );
    await kubectl(["create", "namespace", n]);
    await kubectl(["create", "namespace", m]);
    await applyReadyTenant(a, {
      namespaces: [a1, a2],
      network: { allowFromNamespaces: [m] },
    });
    await applyReadyTenant(b, { namespaces: [b] });
    const started = await startProbes([
      { namespace: a1, name: "a1" },
      { namespace: a2, name: "a2" },
      { namespace: b, name: "b" },
      { namespace: n, name: "n" },
      { namespace: m, name: "m" },
      // What tenant policies let through besides the tenant's own pods and cluster DNS: the broker.
      { namespace: config.BROKER_NAMESPACE, name: uniqueName("broker"), extraPorts: config.BROKER_POD_PORTS },
    ]);
    for (const probe of started) {
      probes[probe.namespace === config.BROKER_NAMESPACE ? "broker" : probe.name] = probe;
    }
    dns = await clusterDnsPod();
    await enforced([at("a1"), at("a2"), at("b")]);
  }, 300_000);

  afterAll(async () => {
    await operator?.stop();
    for (const ns of [n, m]) await kubectl(["delete", "namespace", ns, "--wait=false"]);
    for (const tenant of [a, b]) await kubectl(["delete", "tenant", tenant, "--wait=false"]);
    if (probes.broker) {
      await kubectl(["delete", "pod", "-n", probes.broker.namespace, probes.broker.name, "--wait=false"]);
    }
  });

  it("lets a tenant's pods reach each other across its namespaces over TCP and UDP", async () => {
    expect(connected(await both("a1", "a2"))).toEqual([true, true]);
    expect(connected(await both("a2", "a1"))).toEqual([true, true]);
  });

  it("refuses every cross-tenant connection in both directions, TCP and UDP", async () => {
    for (const [from, to] of [
      ["a1", "b"],
      ["a2", "b"],
      ["b", "a1"],
      ["b", "a2"],
    ] as const) {
      expect(connected(await both(from, to)), `${from} -> ${to}`).toEqual([false, false]);
    }
  });

  it("refuses a non-tenant namespace's pods in, and tenant pods out to them", async () => {
    expect(connected(await both("n", "a1"))).toEqual([false, false]);
    expect(connected(await both("a1", "n"))).toEqual([false, false]);
    // Twin: the probe in n answers whoever the policies let reach it (m belongs to no tenant).
    expect(connected(await both("m", "n"))).toEqual([true, true]);
  });

  it("lets in exactly the namespaces allowFromNamespaces names", async () => {
    expect(connected(await both("m", "a1"))).toEqual([true, true]);
    expect(connected(await both("m", "a2"))).toEqual([true, true]);
    // Ingress only: a's pods still cannot open connections into m.
    expect(connected(await both("a1", "m"))).toEqual([false, false]);
    // m is not let into tenant b.
    expect(connected(await both("m", "b"))).toEqual([false, false]);
  });

  it("keeps another tenant out even when a tenant names its namespace in allowFromNamespaces", async () => {
    await applyManifest({
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: a },
      spec: { namespaces: [a1, a2], network: { allowFromNamespaces: [m, b] } },
    });
    await eventually(
      "the foreign entry reported",
      async () =>
        (await kubectl(["get", "tenant", a, "-o", "jsonpath={.status.conditions}"])).stdout.includes(b)
          ? true
          : undefined,
      60_000,
    );
    expect(connected(await both("b", "a1"))).toEqual([false, false]);
    expect(connected(await both("m", "a1"))).toEqual([true, true]);
    await applyReadyTenant(a, { namespaces: [a1, a2], network: { allowFromNamespaces: [m] } });
  });

  it("resolves names through the cluster's DNS, and reaches nothing else of its pod", async () => {
    const lookup = ["nslookup", "kubernetes.default.svc.cluster.local"];
    expect((await inProbe(at("a1"), lookup)).output).toContain(KUBERNETES_SERVICE_IP);
    expect((await inProbe(at("b"), lookup)).output).toContain(KUBERNETES_SERVICE_IP);
    // CoreDNS's health port is no DNS: refused to tenant pods...
    expect((await connect(at("a1"), "http", dns, 8080)).connected).toBe(false);
    // ...and it answers a pod outside every tenant (the twin).
    expect((await connect(at("n"), "http", dns, 8080)).connected).toBe(true);
  });

  it("reaches the broker's namespace on the broker's ports only", async () => {
    for (const port of config.BROKER_POD_PORTS) {
      expect((await connect(at("b"), "tcp", at("broker").ip, port)).connected, `broker tcp/${port}`).toBe(
        true,
      );
      expect((await connect(at("b"), "udp", at("broker").ip, port)).connected).toBe(false);
    }
    expect((await connect(at("b"), "tcp", at("broker").ip, PROBE_PORT)).connected).toBe(false);
    // Twin: the same port answers a pod outside every tenant.
    expect((await connect(at("n"), "tcp", at("broker").ip, PROBE_PORT)).connected).toBe(true);
  });

  it("opens exactly the allowEgressCIDRs range on exactly its egress ports", async () => {
    await applyReadyTenant(a, {
      namespaces: [a1, a2],
      network: {
        allowFromNamespaces: [m],
        allowEgressCIDRs: [`${at("n").ip}/32`],
        egressPorts: [{ port: PROBE_PORT, protocol: "TCP" }],
      },
    });
    try {
      await eventually(
        "a1 reaches n's address on the opened port",
        async () => ((await connect(at("a1"), "tcp", at("n").ip)).connected ? true : undefined),
        60_000,
      );
      expect((await connect(at("a1"), "udp", at("n").ip)).connected).toBe(false);
      expect((await connect(at("a1"), "tcp", at("m").ip)).connected).toBe(false);
      expect(connected(await both("b", "n"))).toEqual([false, false]);
    } finally {
      await applyReadyTenant(a, { namespaces: [a1, a2], network: { allowFromNamespaces: [m] } });
    }
  });

  it("restores NetworkPolicies deleted by hand, and traffic stops again", async () => {
    await operator?.stop();
    operator = undefined;
    await kubectl(["delete", "networkpolicy", "-n", b, "--all"]);
    // With no policy selecting them, b's pods are open: the deletion alone lets n in.
    await eventually(
      "n reaches b once b's policies are gone",
      async () => ((await connect(at("n"), "tcp", at("b").ip)).connected ? true : undefined),
      60_000,
    );
    operator = await startTestOperator(config);
    await eventually(
      "the operator restores b's policies",
      async () =>
        (await kubectl(["get", "networkpolicy", "-n", b, TenantObjectName.defaultDeny])).ok
          ? true
          : undefined,
      60_000,
    );
    await eventually(
      "n is refused again",
      async () => (connected(await both("n", "b")).every((c) => !c) ? true : undefined),
      60_000,
    );
    expect(connected(await both("a1", "b"))).toEqual([false, false]);
  });
});
