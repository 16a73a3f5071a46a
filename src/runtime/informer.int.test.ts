import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { CONFIG_MAP, NAMESPACE } from "../../test/fixtures/runtime/resources.js";
import { type ControlPlane, startControlPlane } from "../../test/harness/control-plane.js";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { createLogger } from "../observability/logger.js";
import { OperatorMetrics } from "../observability/metrics.js";
import { Informer } from "./informer.js";
import { KubeClient } from "./kube-client.js";
import type { KubeObject } from "./kube-object.js";

const logger = createLogger({ level: "warn" });

// These tests restart kube-apiserver and compact etcd, so they get a control plane of their own.
let plane: ControlPlane;
let stateDir: string;
let client: KubeClient;

beforeAll(async () => {
  stateDir = await mkdtemp(join(tmpdir(), "runtime-informer-"));
  plane = await startControlPlane({ binDir: inject("stack").binDir, stateDir });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(plane.kubeconfig);
  client = new KubeClient(kubeConfig);
});

afterAll(async () => {
  await plane?.stop();
  await rm(stateDir, { recursive: true, force: true });
});

type ConfigMap = KubeObject & { data?: Record<string, string> };

/** An informer plus a record of what its handlers were told, by name. */
async function watchedNamespace(options: { inactivityTimeoutMs?: number } = {}) {
  const namespace = uniqueName("inf");
  await client.apply(NAMESPACE, { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
  const metrics = new OperatorMetrics({ processMetrics: false });
  const informer = new Informer<ConfigMap>(
    client,
    { resource: CONFIG_MAP, namespace, retryInitialMs: 100, retryMaxMs: 1_000, ...options },
    logger,
    metrics,
  );
  const seen = new Map<string, string | undefined>();
  const deleted = new Set<string>();
  informer.addHandler({
    onAdd: (object) => seen.set(object.metadata.name, object.data?.v),
    onUpdate: (_, object) => seen.set(object.metadata.name, object.data?.v),
    onDelete: (object) => {
      seen.delete(object.metadata.name);
      deleted.add(object.metadata.name);
    },
  });
  const put = (name: string, v: string) =>
    client.apply(CONFIG_MAP, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name, namespace },
      data: { v },
    });
  const remove = (name: string) => client.delete(CONFIG_MAP, { namespace, name });
  /** The server's state, name → data.v, to compare the cache and the handlers with. */
  const serverState = async () => {
    const list = (await client.request({
      verb: "list",
      method: "GET",
      path: `/api/v1/namespaces/${namespace}/configmaps`,
    })) as { items: ConfigMap[] };
    return new Map(
      list.items
        .filter((item) => item.metadata.name !== "kube-root-ca.crt")
        .map((item) => [item.metadata.name, item.data?.v]),
    );
  };
  const cacheState = () =>
    new Map(
      informer
        .list()
        .filter((item) => item.metadata.name !== "kube-root-ca.crt")
        .map((item) => [item.metadata.name, item.data?.v]),
    );
  const handlerState = () => new Map([...seen].filter(([name]) => name !== "kube-root-ca.crt"));
  const counter = async (
    name: "informerLists" | "informerWatchRestarts",
    labels: Record<string, string> = {},
  ) => {
    const { values } = await metrics[name].get();
    return values
      .filter((sample) =>
        Object.entries(labels).every(
          ([key, value]) => (sample.labels as Record<string, unknown>)[key] === value,
        ),
      )
      .reduce((sum, sample) => sum + sample.value, 0);
  };
  return { informer, put, remove, serverState, cacheState, handlerState, deleted, counter };
}

async function expectConverged(ns: Awaited<ReturnType<typeof watchedNamespace>>) {
  const expected = await ns.serverState();
  await eventually(
    "cache and handlers match the server",
    async () =>
      JSON.stringify([...ns.cacheState()].sort()) === JSON.stringify([...expected].sort()) &&
      JSON.stringify([...ns.handlerState()].sort()) === JSON.stringify([...expected].sort())
        ? true
        : undefined,
    30_000,
  );
}

async function etcd(path: string, body: unknown): Promise<{ header?: { revision?: string } }> {
  const response = await fetch(`${plane.etcdUrl}${path}`, { method: "POST", body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`etcd ${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as { header?: { revision?: string } };
}

describe("informer against a control plane that misbehaves", () => {
  it("loses no change when kube-apiserver restarts during the watch", async () => {
    const ns = await watchedNamespace();
    ns.informer.start();
    await ns.informer.waitForSync();
    for (const i of [0, 1, 2, 3, 4]) await ns.put(`cm-${i}`, "0");
    await expectConverged(ns);

    for (const i of [0, 1, 2]) await ns.put(`cm-${i}`, "1");
    await plane.restartApiServer();
    for (const i of [0, 1, 2, 3]) await ns.put(`cm-${i}`, "2");
    await ns.put("cm-5", "2");
    await ns.remove("cm-4");

    await expectConverged(ns);
    expect(ns.cacheState().get("cm-0")).toBe("2");
    expect(ns.deleted).toContain("cm-4");
    await ns.informer.stop();
  });

  it("relists after 410 Gone when etcd was compacted past its resourceVersion, reporting deletions it missed", async () => {
    const ns = await watchedNamespace();
    ns.informer.start();
    await ns.informer.waitForSync();
    for (const name of ["keep", "change", "drop"]) await ns.put(name, "0");
    await expectConverged(ns);
    await ns.informer.stop();
    expect(await ns.counter("informerLists")).toBe(1);

    await ns.put("change", "1");
    await ns.put("new", "1");
    await ns.remove("drop");
    const { header } = await etcd("/v3/kv/range", { key: Buffer.from("\0").toString("base64") });
    await etcd("/v3/kv/compaction", { revision: header?.revision, physical: true });
    // A fresh apiserver has no watch cache history either, so the old resourceVersion is gone everywhere.
    await plane.restartApiServer();

    ns.informer.start();
    await expectConverged(ns);
    expect(await ns.counter("informerWatchRestarts", { reason: "gone" })).toBeGreaterThanOrEqual(1);
    expect(await ns.counter("informerLists")).toBe(2);
    expect(ns.deleted).toContain("drop");
    expect(ns.cacheState()).toEqual(
      new Map([
        ["keep", "0"],
        ["change", "1"],
        ["new", "1"],
      ]),
    );
    await ns.informer.stop();
  });

  it("treats a watch that stays silent past the inactivity timeout as stalled and resumes it", async () => {
    const ns = await watchedNamespace({ inactivityTimeoutMs: 1_000 });
    ns.informer.start();
    await ns.informer.waitForSync();
    await eventually("a stalled watch was restarted", async () =>
      (await ns.counter("informerWatchRestarts", { reason: "stalled" })) > 0 ? true : undefined,
    );
    await ns.put("after-stall", "1");
    await expectConverged(ns);
    // Resumed from its resourceVersion, not relisted.
    expect(await ns.counter("informerLists")).toBe(1);
    await ns.informer.stop();
  });
});
