import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.js";
import { ExponentialFailureRateLimiter } from "./rate-limiter.js";
import { WorkQueue, type WorkQueueMetrics } from "./work-queue.js";

function setup() {
  const clock = new ManualClock(1_000_000);
  const recorded = { adds: 0, retries: 0, depth: 0, waits: [] as number[] };
  const metrics: WorkQueueMetrics = {
    added: () => recorded.adds++,
    retried: () => recorded.retries++,
    depth: (items) => {
      recorded.depth = items;
    },
    queued: (seconds) => recorded.waits.push(seconds),
  };
  const queue = new WorkQueue(clock, new ExponentialFailureRateLimiter(100, 60_000), metrics);
  return { clock, queue, recorded };
}

/** Keys available right now, without waiting for more. */
async function drainNow(queue: WorkQueue): Promise<string[]> {
  const keys: string[] = [];
  while (queue.length > 0) {
    const key = await queue.get();
    if (key !== undefined) keys.push(key);
  }
  return keys;
}

describe("WorkQueue", () => {
  it("hands out keys in order and each only once however often it was added", async () => {
    const { queue, recorded } = setup();
    for (const key of ["a", "b", "a", "c", "b"]) queue.add(key);
    expect(recorded.adds).toBe(3);
    expect(await drainNow(queue)).toEqual(["a", "b", "c"]);
  });

  it("never hands a key out twice at once; a re-add while processing comes back after done", async () => {
    const { queue } = setup();
    queue.add("a");
    expect(await queue.get()).toBe("a");
    queue.add("a");
    queue.add("a");
    expect(queue.length).toBe(0);
    queue.done("a");
    expect(await drainNow(queue)).toEqual(["a"]);
    queue.done("a");
    expect(queue.length).toBe(0);
  });

  it("wakes a waiting worker when a key arrives", async () => {
    const { queue } = setup();
    const next = queue.get();
    queue.add("late");
    expect(await next).toBe("late");
  });

  it("reports how long a key waited", async () => {
    const { clock, queue, recorded } = setup();
    queue.add("a");
    clock.advance(250);
    await queue.get();
    expect(recorded.waits).toEqual([0.25]);
  });

  it("adds a delayed key when its time comes, keeping the earliest of several delays", async () => {
    const { clock, queue } = setup();
    queue.addAfter("a", 5_000);
    queue.addAfter("a", 1_000);
    queue.addAfter("a", 3_000);
    clock.advance(999);
    expect(queue.length).toBe(0);
    clock.advance(1);
    expect(await drainNow(queue)).toEqual(["a"]);
    clock.advance(10_000);
    expect(queue.length).toBe(0);
  });

  it("backs off exponentially per key on rate-limited adds and starts over after forget", async () => {
    const { clock, queue, recorded } = setup();
    const readyAfter = async (key: string): Promise<number> => {
      queue.addRateLimited(key);
      let waited = 0;
      while (queue.length === 0 && waited < 10_000) {
        clock.advance(1);
        waited++;
      }
      queue.done((await queue.get()) as string);
      return waited;
    };
    expect([await readyAfter("a"), await readyAfter("a"), await readyAfter("a")]).toEqual([100, 200, 400]);
    expect(queue.retries("a")).toBe(3);
    expect(recorded.retries).toBe(3);
    queue.forget("a");
    expect(await readyAfter("a")).toBe(100);
  });

  it("after shutdown hands out what is queued, ignores new and delayed keys, then returns undefined", async () => {
    const { clock, queue } = setup();
    queue.add("a");
    queue.addAfter("b", 100);
    queue.shutDown();
    queue.add("c");
    clock.advance(1_000);
    expect(await queue.get()).toBe("a");
    expect(await queue.get()).toBeUndefined();
  });

  it("releases waiting workers on shutdown and reports drained once in-flight keys are done", async () => {
    const { queue } = setup();
    queue.add("a");
    const taken = await queue.get();
    const idleWorker = queue.get();
    let drained = false;
    queue.shutDown();
    const drainedPromise = queue.drained().then(() => {
      drained = true;
    });
    expect(await idleWorker).toBeUndefined();
    await Promise.resolve();
    expect(drained).toBe(false);
    queue.done(taken as string);
    await drainedPromise;
    expect(drained).toBe(true);
  });
});
