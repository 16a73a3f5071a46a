import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.js";
import { ExponentialFailureRateLimiter } from "./rate-limiter.js";
import {
  type AddOptions,
  FairPriorityQueue,
  Priority,
  type QueuedKey,
  WorkQueue,
  type WorkQueueMetrics,
} from "./work-queue.js";

const { low, normal, cutOff } = Priority;

function setup() {
  const clock = new ManualClock(1_000_000);
  const recorded = { adds: 0, retries: 0, depth: new Map<number, number>(), waits: [] as number[] };
  const metrics: WorkQueueMetrics = {
    added: () => recorded.adds++,
    retried: () => recorded.retries++,
    depth: (priority, items) => recorded.depth.set(priority, items),
    queued: (_, seconds) => recorded.waits.push(seconds),
  };
  const queue = new WorkQueue(clock, new ExponentialFailureRateLimiter(100, 60_000), {
    metrics,
    // Keys are "<tenant>/<device>": tenants take turns.
    fairnessGroup: (key) => key.split("/")[0] ?? key,
  });
  return { clock, queue, recorded };
}

/** Keys available right now, in the order workers would get them, each marked done at once. */
async function drainNow(queue: WorkQueue): Promise<string[]> {
  const keys: string[] = [];
  while (queue.length > 0) {
    const next = await queue.get();
    if (next === undefined) break;
    keys.push(next.key);
    queue.done(next.key);
  }
  return keys;
}

type Op = [key: string, options?: AddOptions];

describe("FairPriorityQueue", () => {
  it.each<[string, Array<[key: string, group: string, priority: number]>, string[]]>([
    [
      "first in, first out within a group",
      [
        ["a", "t", 0],
        ["b", "t", 0],
        ["c", "t", 0],
      ],
      ["a", "b", "c"],
    ],
    [
      "higher priority first",
      [
        ["a", "t", low],
        ["b", "t", normal],
        ["c", "t", cutOff],
      ],
      ["c", "b", "a"],
    ],
    [
      "groups take turns within a priority",
      [
        ["a1", "a", 0],
        ["a2", "a", 0],
        ["a3", "a", 0],
        ["b1", "b", 0],
        ["c1", "c", 0],
        ["b2", "b", 0],
      ],
      ["a1", "b1", "c1", "a2", "b2", "a3"],
    ],
    [
      "a high-priority key of a quiet group beats a busy group's backlog",
      [
        ["a1", "a", 0],
        ["a2", "a", 0],
        ["a3", "a", 0],
        ["b1", "b", cutOff],
      ],
      ["b1", "a1", "a2", "a3"],
    ],
    [
      "turns are per priority: a cut-off flood of one group alternates with another's cut-off",
      [
        ["a1", "a", cutOff],
        ["a2", "a", cutOff],
        ["a3", "a", cutOff],
        ["b1", "b", cutOff],
        ["b2", "b", 0],
      ],
      ["a1", "b1", "a2", "a3", "b2"],
    ],
    [
      "the same key pushed twice is there once",
      [
        ["a", "t", 0],
        ["a", "t", 0],
      ],
      ["a"],
    ],
  ])("%s", (_, pushes, order) => {
    const ready = new FairPriorityQueue();
    for (const [key, group, priority] of pushes) ready.push(key, group, priority);
    expect(ready.length).toBe(order.length);
    const taken = Array.from({ length: order.length }, () => ready.shift()?.key);
    expect(taken).toEqual(order);
    expect(ready.shift()).toBeUndefined();
    expect(ready.length).toBe(0);
  });

  it("a group that ran dry and comes back waits for its turn", () => {
    const ready = new FairPriorityQueue();
    ready.push("a1", "a", 0);
    ready.push("b1", "b", 0);
    ready.push("b2", "b", 0);
    expect(ready.shift()?.key).toBe("a1");
    ready.push("a2", "a", 0);
    expect([ready.shift()?.key, ready.shift()?.key, ready.shift()?.key]).toEqual(["b1", "a2", "b2"]);
  });

  it("delete takes a key out of its level and group", () => {
    const ready = new FairPriorityQueue();
    ready.push("a", "t", cutOff);
    ready.push("b", "t", 0);
    ready.delete("a", "t", cutOff);
    ready.delete("missing", "t", 0);
    expect(ready.lengthAt(cutOff)).toBe(0);
    expect(ready.shift()).toEqual({ key: "b", priority: 0 });
  });
});

describe("WorkQueue", () => {
  it.each<[string, Op[], string[]]>([
    [
      "de-duplicates: a key added several times comes out once",
      [["t/a"], ["t/b"], ["t/a"], ["t/c"], ["t/b"]],
      ["t/a", "t/b", "t/c"],
    ],
    [
      "a cut-off overtakes provisioning and the start-up list",
      [["a/1", { priority: low }], ["a/2"], ["a/3"], ["b/1", { priority: cutOff }]],
      ["b/1", "a/2", "a/3", "a/1"],
    ],
    [
      "a re-add at a higher priority raises the queued key",
      [["t/a"], ["t/b"], ["t/c"], ["t/c", { priority: cutOff }]],
      ["t/c", "t/a", "t/b"],
    ],
    [
      "a re-add at a lower priority keeps the higher one",
      [
        ["t/a", { priority: cutOff }],
        ["t/b", { priority: cutOff }],
        ["t/a", { priority: low }],
      ],
      ["t/a", "t/b"],
    ],
    [
      "one tenant's churn cannot starve another's: tenants take turns",
      [["a/1"], ["a/2"], ["a/3"], ["a/4"], ["b/1"], ["c/1"], ["b/2"]],
      ["a/1", "b/1", "c/1", "a/2", "b/2", "a/3", "a/4"],
    ],
  ])("%s", async (_, ops, order) => {
    const { queue } = setup();
    for (const [key, options] of ops) queue.add(key, options);
    expect(await drainNow(queue)).toEqual(order);
  });

  it("counts an add only when the key was not due yet and reports depth per priority", async () => {
    const { queue, recorded } = setup();
    for (const key of ["t/a", "t/b", "t/a"]) queue.add(key);
    queue.add("t/b", { priority: cutOff });
    expect(recorded.adds).toBe(2);
    expect(recorded.depth.get(normal)).toBe(1);
    expect(recorded.depth.get(cutOff)).toBe(1);
    await drainNow(queue);
    expect([recorded.depth.get(normal), recorded.depth.get(cutOff)]).toEqual([0, 0]);
  });

  it("never hands a key out twice at once; a re-add while processing comes back after done, at its priority", async () => {
    const { queue } = setup();
    queue.add("t/a");
    expect(await queue.get()).toMatchObject({ key: "t/a", priority: normal });
    queue.add("t/a");
    queue.add("t/a", { priority: cutOff });
    queue.add("t/b");
    expect((await queue.get())?.key).toBe("t/b");
    expect(queue.length).toBe(0);
    queue.done("t/b");
    queue.done("t/a");
    expect(await queue.get()).toMatchObject({ key: "t/a", priority: cutOff });
    queue.done("t/a");
    expect(queue.length).toBe(0);
  });

  it("keeps keys exclusive under concurrent workers and processes every add", async () => {
    const { clock, queue } = setup();
    // A seeded generator: the same interleaving on every run.
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      // The high bits: an LCG's low bits cycle quickly.
      return Math.floor(seed / 2 ** 16) % n;
    };
    const keys = Array.from({ length: 12 }, (_, i) => `t${i % 3}/k${i}`);
    const priorities = [low, normal, cutOff];
    const inFlight = new Set<string>();
    const addedSince = new Map<string, number>();
    const processed = new Map<string, number>();
    let overlaps = 0;
    const worker = async () => {
      for (;;) {
        const next = await queue.get();
        if (!next) return;
        if (inFlight.has(next.key)) overlaps++;
        inFlight.add(next.key);
        addedSince.set(next.key, 0);
        // Work takes a random number of ticks, during which more adds arrive.
        for (let i = random(5); i > 0; i--) await Promise.resolve();
        processed.set(next.key, (processed.get(next.key) ?? 0) + 1);
        inFlight.delete(next.key);
        queue.done(next.key);
      }
    };
    const workers = Array.from({ length: 4 }, worker);
    for (let step = 0; step < 2_000; step++) {
      const key = keys[random(keys.length)] as string;
      const delayed = random(4) === 0;
      queue.add(key, {
        priority: priorities[random(3)] as number,
        ...(delayed ? { afterMs: 1 + random(50) } : {}),
      });
      if (!delayed) addedSince.set(key, (addedSince.get(key) ?? 0) + 1);
      if (random(3) === 0) clock.advance(random(20));
      await Promise.resolve();
    }
    clock.advance(100);
    queue.shutDown();
    await Promise.all(workers);
    expect(overlaps).toBe(0);
    // Every add was followed by a reconcile that started after it.
    expect([...addedSince.values()].every((pending) => pending === 0)).toBe(true);
    expect(processed.size).toBe(keys.length);
  });

  it("wakes a waiting worker when a key arrives", async () => {
    const { queue } = setup();
    const next = queue.get();
    queue.add("t/late", { priority: low });
    expect(await next).toMatchObject({ key: "t/late", priority: low });
  });

  it("a worker kept for cut-offs leaves provisioning keys to the others and takes a cut-off at once", async () => {
    const { queue } = setup();
    queue.add("a/1");
    queue.add("a/2", { priority: low });
    let kept: QueuedKey | undefined;
    const keptWorker = queue.get(cutOff).then((next) => {
      kept = next;
    });
    await Promise.resolve();
    expect(kept).toBeUndefined();
    queue.add("b/1", { priority: cutOff });
    await keptWorker;
    expect(kept).toMatchObject({ key: "b/1", priority: cutOff });
    // The provisioning keys are still there, in order, for the other workers.
    expect(await drainNow(queue)).toEqual(["a/1", "a/2"]);
  });

  it("a cut-off already queued goes to the worker kept for cut-offs; on shutdown that worker stops", async () => {
    const { queue } = setup();
    queue.add("a/1");
    queue.add("b/1", { priority: cutOff });
    expect(await queue.get(cutOff)).toMatchObject({ key: "b/1", priority: cutOff });
    const keptWorker = queue.get(cutOff);
    queue.shutDown();
    expect(await keptWorker).toBeUndefined();
    expect((await queue.get())?.key).toBe("a/1");
  });

  it("reports how long a key waited", async () => {
    const { clock, queue, recorded } = setup();
    queue.add("t/a");
    clock.advance(250);
    await queue.get();
    expect(recorded.waits).toEqual([0.25]);
  });

  it("adds a delayed key when its time comes: the earliest time and the highest priority win", async () => {
    const { clock, queue } = setup();
    queue.add("t/a", { afterMs: 5_000, priority: cutOff });
    queue.add("t/a", { afterMs: 1_000 });
    queue.add("t/a", { afterMs: 3_000 });
    queue.add("t/b", { afterMs: 1_000 });
    clock.advance(999);
    expect(queue.length).toBe(0);
    clock.advance(1);
    expect(await queue.get()).toMatchObject({ key: "t/a", priority: cutOff });
    queue.done("t/a");
    expect(await drainNow(queue)).toEqual(["t/b"]);
    clock.advance(10_000);
    expect(queue.length).toBe(0);
  });

  it("a key due now absorbs its delayed add: one reconcile, not two", async () => {
    const { clock, queue, recorded } = setup();
    queue.add("t/a", { afterMs: 1_000, priority: cutOff });
    queue.add("t/a");
    expect(await queue.get()).toMatchObject({ key: "t/a", priority: cutOff });
    queue.done("t/a");
    queue.add("t/a");
    queue.add("t/a", { afterMs: 1_000 });
    expect(await drainNow(queue)).toEqual(["t/a"]);
    clock.advance(5_000);
    expect(queue.length).toBe(0);
    expect(recorded.adds).toBe(2);
  });

  it("backs off exponentially per key on rate-limited adds and starts over after forget", async () => {
    const { clock, queue, recorded } = setup();
    const readyAfter = async (key: string): Promise<number> => {
      queue.add(key, { rateLimited: true });
      let waited = 0;
      while (queue.length === 0 && waited < 10_000) {
        clock.advance(1);
        waited++;
      }
      queue.done((await queue.get())?.key as string);
      return waited;
    };
    expect([await readyAfter("t/a"), await readyAfter("t/a"), await readyAfter("t/a")]).toEqual([
      100, 200, 400,
    ]);
    expect(queue.retries("t/a")).toBe(3);
    expect(recorded.retries).toBe(3);
    queue.forget("t/a");
    expect(await readyAfter("t/a")).toBe(100);
  });

  it("a retried cut-off keeps its priority; a new change during the backoff runs at once", async () => {
    const { clock, queue } = setup();
    queue.add("a/1");
    queue.add("b/1", { rateLimited: true, priority: cutOff });
    expect(await drainNow(queue)).toEqual(["a/1"]);
    queue.add("a/2");
    clock.advance(100);
    expect(await drainNow(queue)).toEqual(["b/1", "a/2"]);

    queue.add("b/1", { rateLimited: true, priority: cutOff });
    queue.add("b/1", { priority: normal });
    expect(await queue.get()).toMatchObject({ key: "b/1", priority: cutOff });
    queue.done("b/1");
    clock.advance(60_000);
    expect(queue.length).toBe(0);
  });

  it("after shutdown hands out what is queued, ignores new and delayed keys, then returns undefined", async () => {
    const { clock, queue } = setup();
    queue.add("t/a");
    queue.add("t/b", { afterMs: 100 });
    queue.shutDown();
    queue.add("t/c");
    clock.advance(1_000);
    expect((await queue.get())?.key).toBe("t/a");
    expect(await queue.get()).toBeUndefined();
  });

  it("releases waiting workers on shutdown and reports drained once in-flight keys are done", async () => {
    const { queue } = setup();
    queue.add("t/a");
    const taken = (await queue.get()) as QueuedKey;
    const idleWorker = queue.get();
    let drained = false;
    queue.shutDown();
    const drainedPromise = queue.drained().then(() => {
      drained = true;
    });
    expect(await idleWorker).toBeUndefined();
    await Promise.resolve();
    expect(drained).toBe(false);
    queue.done(taken.key);
    await drainedPromise;
    expect(drained).toBe(true);
  });
});
