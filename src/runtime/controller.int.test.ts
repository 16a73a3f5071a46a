import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { CONFIG_MAP, NAMESPACE } from "../../test/fixtures/runtime/resources.js";
import { CRD_RESOURCE, WIDGET, widgetCrd } from "../../test/fixtures/runtime/widget-crd.js";
import { untilIdle } from "../../test/support/idle.js";
import { adminKubeConfig, eventually, uniqueName } from "../../test/support/kube.js";
import { createLogger } from "../observability/logger.js";
import { applyIfChanged, applyStatusIfChanged } from "./apply.js";
import { type Condition, isConditionTrue, setCondition } from "./conditions.js";
import type { ReconcileRequest } from "./controller.js";
import { TerminalError } from "./errors.js";
import { EVENT_RESOURCE } from "./events.js";
import { KubeClient } from "./kube-client.js";
import { controllerReference, kubeObjectSchema, objectKey, resourcePath } from "./kube-object.js";
import { Manager } from "./manager.js";
import { ExponentialFailureRateLimiter } from "./rate-limiter.js";

const widgetSchema = kubeObjectSchema.extend({
  spec: z.looseObject({ data: z.record(z.string(), z.string()).optional(), fail: z.string().optional() }),
  status: z
    .looseObject({
      observedGeneration: z.number().optional(),
      conditions: z.array(z.custom<Condition>()).optional(),
    })
    .optional(),
});
type Widget = z.infer<typeof widgetSchema>;

const namespace = uniqueName("runtime-ctl");
const admin = new KubeClient(adminKubeConfig());
const manager = new Manager({
  kubeConfig: adminKubeConfig(),
  identity: "controller-int-test",
  logger: createLogger({ level: "warn" }),
  probes: { port: 0 },
  informerDefaults: { retryInitialMs: 100, retryMaxMs: 1_000 },
});
const widgets = manager.informer(WIDGET, { namespace, schema: widgetSchema });
const configMaps = manager.informer(CONFIG_MAP, { namespace });
const widgetReconciles = new Map<string, number>();
const flakyAttempts = new Map<string, number[]>();

/** The reconciler under test: a child ConfigMap per Widget, a Ready condition, an Event when it turns Ready. */
async function reconcileWidget({ key }: ReconcileRequest, { signal }: { signal: AbortSignal }) {
  widgetReconciles.set(key, (widgetReconciles.get(key) ?? 0) + 1);
  const widget = widgets.get(key);
  if (!widget || widget.metadata.deletionTimestamp) return undefined;
  if (widget.spec.fail)
    throw new TerminalError(`cannot build: ${widget.spec.fail}`, { reason: "InvalidSpec" });
  const child = {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: `${widget.metadata.name}-child`,
      namespace: widget.metadata.namespace,
      ownerReferences: [controllerReference({ ...widget, apiVersion: WIDGET.apiVersion, kind: WIDGET.kind })],
    },
    data: widget.spec.data ?? {},
  };
  await applyIfChanged(manager.client, CONFIG_MAP, child, configMaps.get(objectKey(child.metadata)), signal);
  const wasReady = isConditionTrue(widget.status?.conditions, "Ready");
  await writeReady(widget, { status: "True", reason: "Reconciled", message: "child is up to date" }, signal);
  if (!wasReady) {
    await manager.events.record(widget, {
      type: "Normal",
      reason: "Ready",
      action: "Reconcile",
      note: "widget is ready",
    });
  }
  return undefined;
}

async function writeReady(
  widget: Widget,
  ready: { status: "True" | "False"; reason: string; message: string },
  signal: AbortSignal,
) {
  const generation = widget.metadata.generation;
  const conditions = setCondition(
    widget.status?.conditions ?? [],
    { type: "Ready", ...ready },
    {
      generation,
      nowMs: Date.now(),
    },
  );
  await applyStatusIfChanged(
    manager.client,
    WIDGET,
    widget,
    { observedGeneration: generation, conditions },
    signal,
  );
}

manager.addController({
  name: "widget",
  for: widgets,
  owns: [{ informer: configMaps }],
  reconcile: reconcileWidget,
  maxConcurrentReconciles: 2,
  onTerminalError: (widget, error, { signal }) =>
    writeReady(
      widget,
      { status: "False", reason: "InvalidSpec", message: String((error as Error).message) },
      signal,
    ),
});

manager.addController({
  name: "flaky",
  for: manager.informer(CONFIG_MAP, { namespace, labelSelector: "runtime-test/flaky" }),
  rateLimiter: new ExponentialFailureRateLimiter(500, 10_000),
  reconcile: async ({ key }) => {
    const attempts = flakyAttempts.get(key) ?? [];
    attempts.push(performance.now());
    flakyAttempts.set(key, attempts);
    if (attempts.length <= 3) throw new Error(`flaky failure #${attempts.length}`);
    return undefined;
  },
});

let running: Promise<void>;

beforeAll(async () => {
  await admin.apply(CRD_RESOURCE, widgetCrd);
  await admin.apply(NAMESPACE, { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
  await eventually("the Widget CRD serves", () =>
    admin.request({ verb: "list", method: "GET", path: resourcePath(WIDGET, { namespace }) }),
  );
  running = manager.run();
  await eventually("caches synced", async () => (manager.notReadyReason() === undefined ? true : undefined));
});

afterAll(async () => {
  await manager.stop();
  await running;
  await admin.delete(NAMESPACE, { name: namespace });
});

async function createWidget(name: string, spec: Record<string, unknown>) {
  return admin.create(WIDGET, {
    apiVersion: WIDGET.apiVersion,
    kind: WIDGET.kind,
    metadata: { name, namespace },
    spec,
  });
}

async function readyCondition(name: string) {
  const widget = widgetSchema.parse(await admin.get(WIDGET, { namespace, name }));
  return widget.status?.conditions?.find((condition) => condition.type === "Ready");
}

async function eventsAbout(name: string) {
  const list = (await admin.request({
    verb: "list",
    method: "GET",
    path: resourcePath(EVENT_RESOURCE, { namespace }),
    query: { fieldSelector: `regarding.name=${name}` },
  })) as { items: Array<{ reason: string; type: string; note: string; series?: { count: number } }> };
  return list.items;
}

describe("controller runtime on a real API server", () => {
  it("converges a Widget: child applied, Ready condition with observedGeneration, one Event", async () => {
    const name = uniqueName("w");
    const created = await createWidget(name, { data: { colour: "blue" } });
    const child = await eventually("child ConfigMap", async () =>
      admin.get(CONFIG_MAP, { namespace, name: `${name}-child` }),
    );
    expect(child.data).toEqual({ colour: "blue" });
    expect(child.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Widget", name, controller: true });
    const ready = await eventually("Ready=True", async () => {
      const condition = await readyCondition(name);
      return condition?.status === "True" ? condition : undefined;
    });
    expect(ready).toMatchObject({ reason: "Reconciled", observedGeneration: created.metadata.generation });
    const events = await eventually("Ready event", async () => {
      const found = await eventsAbout(name);
      return found.length > 0 ? found : undefined;
    });
    expect(events).toMatchObject([{ type: "Normal", reason: "Ready", note: "widget is ready" }]);
  });

  it("makes no write requests once converged, even when reconciles keep coming", async () => {
    const name = uniqueName("w");
    await createWidget(name, { data: { a: "1" } });
    await eventually("Ready=True", async () =>
      (await readyCondition(name))?.status === "True" ? true : undefined,
    );
    await eventually("Ready event", async () => ((await eventsAbout(name)).length > 0 ? true : undefined));
    // The reconcile triggered by our own status write runs out before counting.
    await untilIdle(manager.metrics);
    const key = `${namespace}/${name}`;
    const writesBefore = await manager.metrics.writeRequests();
    expect(writesBefore).toBeGreaterThan(0);
    for (const value of ["x", "y", "z"]) {
      const reconciles = widgetReconciles.get(key) ?? 0;
      await admin.mergePatch(WIDGET, { namespace, name }, { metadata: { labels: { touched: value } } });
      await eventually(`reconciled after touch ${value}`, async () =>
        (widgetReconciles.get(key) ?? 0) > reconciles ? true : undefined,
      );
    }
    await untilIdle(manager.metrics);
    expect(await manager.metrics.writeRequests()).toBe(writesBefore);
  });

  it("puts back a child deleted by hand (owned objects map to their owner's key)", async () => {
    const name = uniqueName("w");
    await createWidget(name, { data: { a: "1" } });
    const original = await eventually("child", async () =>
      admin.get(CONFIG_MAP, { namespace, name: `${name}-child` }),
    );
    await admin.delete(CONFIG_MAP, { namespace, name: `${name}-child` });
    const restored = await eventually("child re-created", async () => {
      const child = await admin.get(CONFIG_MAP, { namespace, name: `${name}-child` });
      return child && child.metadata.uid !== original.metadata.uid ? child : undefined;
    });
    expect(restored.data).toEqual({ a: "1" });
  });

  it("surfaces a terminal error in a condition and a Warning Event, without retrying", async () => {
    const name = uniqueName("w");
    await createWidget(name, { fail: "no such colour" });
    const condition = await eventually("Ready=False", async () => {
      const ready = await readyCondition(name);
      return ready?.status === "False" ? ready : undefined;
    });
    expect(condition).toMatchObject({ reason: "InvalidSpec", message: "cannot build: no such colour" });
    const events = await eventually("Warning event", async () => {
      const found = await eventsAbout(name);
      return found.some((event) => event.type === "Warning") ? found : undefined;
    });
    expect(events.find((event) => event.type === "Warning")).toMatchObject({
      reason: "InvalidSpec",
      note: "cannot build: no such colour",
    });
    const key = `${namespace}/${name}`;
    const reconciles = widgetReconciles.get(key);
    await untilIdle(manager.metrics);
    // The only further reconcile allowed is the one our own status write triggers (and it fails terminally again).
    expect(widgetReconciles.get(key)).toBeLessThanOrEqual((reconciles ?? 0) + 1);
  });

  it("retries a reconcile that fails three times with growing delays, then succeeds", async () => {
    const name = uniqueName("flaky");
    await admin.create(CONFIG_MAP, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name, namespace, labels: { "runtime-test/flaky": "yes" } },
    });
    const attempts = await eventually("four attempts", async () => {
      const found = flakyAttempts.get(`${namespace}/${name}`);
      return found && found.length >= 4 ? found : undefined;
    });
    const gaps = attempts.slice(1).map((at, index) => at - (attempts[index] as number));
    // Delays of 500, 1000 and 2000 ms: each gap is at least its delay, and the first came well before
    // the delay the third waited out (a generous bound that load cannot break, unlike gap-to-gap order).
    expect(gaps[0]).toBeGreaterThanOrEqual(490);
    expect(gaps[1]).toBeGreaterThanOrEqual(990);
    expect(gaps[2]).toBeGreaterThanOrEqual(1_990);
    expect(gaps[0]).toBeLessThan(1_990);
    await untilIdle(manager.metrics);
    expect(flakyAttempts.get(`${namespace}/${name}`)).toHaveLength(4);
  });

  it("serves readiness and the reconcile, queue and API request metrics", async () => {
    // Its own success, terminal failure and retried failure, so that it runs alone.
    const [good, bad, flaky] = [uniqueName("w"), uniqueName("w"), uniqueName("flaky")];
    await createWidget(good, { data: { a: "1" } });
    await createWidget(bad, { fail: "no such colour" });
    await admin.create(CONFIG_MAP, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: flaky, namespace, labels: { "runtime-test/flaky": "yes" } },
    });
    await eventually("widgets settled", async () =>
      (await readyCondition(good))?.status === "True" && (await readyCondition(bad))?.status === "False"
        ? true
        : undefined,
    );
    await eventually("flaky succeeded", async () =>
      (flakyAttempts.get(`${namespace}/${flaky}`)?.length ?? 0) >= 4 ? true : undefined,
    );
    const base = `http://127.0.0.1:${manager.probePort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    for (const pattern of [
      /controller_runtime_reconcile_total\{controller="widget",result="success"\} [1-9]/,
      /controller_runtime_reconcile_errors_total\{controller="flaky"\} [1-9]/,
      /controller_runtime_terminal_reconcile_errors_total\{controller="widget"\} [1-9]/,
      /controller_runtime_reconcile_time_seconds_count\{controller="widget"\} \d+/,
      /workqueue_adds_total\{name="widget"\} \d+/,
      /workqueue_retries_total\{name="flaky"\} [1-9]/,
      /workqueue_queue_duration_seconds_count\{name="widget",priority="-?\d+"\} \d+/,
      /workqueue_depth\{name="widget",priority="-?\d+"\} \d+/,
      /rest_client_requests_total\{verb="apply",code="200",resource="widgets\/status"\} \d+/,
      /rest_client_requests_total\{verb="list",code="200",resource="widgets"\} \d+/,
    ]) {
      expect(metrics).toMatch(pattern);
    }
  });
});
