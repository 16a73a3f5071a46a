import { describe, expect, it } from "vitest";
import { createLogger } from "../observability/logger.js";
import type { ClusterAccess } from "./cluster-access.js";
import { addedOrDeleted, beyondStatus, type Change, Controller } from "./controller.js";
import { EventRecorder } from "./events.js";
import { Informer } from "./informer.js";
import { KubeClient } from "./kube-client.js";
import type { KubeObject } from "./kube-object.js";

const object = (metadata: Partial<KubeObject["metadata"]> = {}): KubeObject => ({
  metadata: { name: "a", uid: "u", resourceVersion: "1", generation: 1, labels: { l: "1" }, ...metadata },
});

describe("which changes are mapped", () => {
  it.each<[string, Change, boolean, boolean]>([
    ["an add", { current: object() }, true, true],
    ["a delete", { current: object(), deleted: true }, true, true],
    ["a status update", { previous: object(), current: object({ resourceVersion: "2" }) }, false, false],
    ["a new generation", { previous: object(), current: object({ generation: 2 }) }, true, false],
    ["new labels", { previous: object(), current: object({ labels: { l: "2" } }) }, true, false],
    [
      "deletion requested",
      { previous: object(), current: object({ deletionTimestamp: "2026-01-01T00:00:00Z" }) },
      true,
      false,
    ],
  ])("%s: beyond status %s, added or deleted %s", (_, change, beyond, membership) => {
    expect(beyondStatus(change)).toBe(beyond);
    expect(addedOrDeleted(change)).toBe(membership);
  });
});

describe("a controller's workers", () => {
  it("let timers run between reconciles served from the caches (a restart's thousands of them lost the lease)", async () => {
    // Never started: the informer only gives the controller its kind; keys are queued by hand.
    const client = new KubeClient({} as ClusterAccess);
    const logger = createLogger({ level: "silent" });
    const informer = new Informer(
      client,
      { resource: { apiVersion: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true } },
      logger,
    );
    const keys = Array.from({ length: 2_000 }, (_, i) => `ns/k-${i}`);
    let reconciled = 0;
    const controller = new Controller(
      {
        name: "cached",
        for: informer,
        maxConcurrentReconciles: 16,
        reconcile: async () => {
          reconciled++;
          return undefined;
        },
      },
      { logger, events: new EventRecorder(client, "test", logger) },
    );
    for (const key of keys) controller.queue.add(key);
    let reconciledWhenTimerRan: number | undefined;
    setTimeout(() => {
      reconciledWhenTimerRan = reconciled;
    }, 0);
    const leadership = new AbortController();
    controller.start(leadership.signal);
    while (reconciled < keys.length) await new Promise((resolve) => setTimeout(resolve, 5));
    await controller.stop(1_000);
    expect(reconciledWhenTimerRan).toBeDefined();
    expect(reconciledWhenTimerRan).toBeLessThan(keys.length / 2);
  });
});
