import { describe, expect, it } from "vitest";
import { Coalescer } from "./coalesce.js";

describe("Coalescer", () => {
  it("writes the first occurrence at once and the repeats of an interval as one write with their count", () => {
    const c = new Coalescer<string>({ intervalMs: 30_000, writesPerSecond: 10, maxKeys: 10 });
    c.offer("dev-a", "refused 1", 0);
    expect(c.take(0)).toEqual([{ key: "dev-a", value: "refused 1", count: 1 }]);
    for (let i = 2; i <= 500; i++) c.offer("dev-a", `refused ${i}`, i * 10);
    expect(c.take(10_000)).toEqual([]);
    expect(c.take(30_000)).toEqual([{ key: "dev-a", value: "refused 500", count: 499 }]);
  });

  it("bounds a storm: one write per key per interval and at most the budget per take", () => {
    const c = new Coalescer<boolean>({ intervalMs: 30_000, writesPerSecond: 10, maxKeys: 100_000 });
    let writes = 0;
    for (let second = 0; second < 60; second++) {
      // 5,000 devices reconnect every second for a minute.
      for (let d = 0; d < 5000; d++) c.offer(`dev-${d}`, second % 2 === 0, second * 1000);
      // Taken ten times a second: the rate holds however often the caller asks.
      for (let tenth = 0; tenth < 10; tenth++) {
        const taken = c.take(second * 1000 + tenth * 100);
        writes += taken.length;
      }
    }
    // One second's burst, then the rate: 10 + 10/s × 59.9 s.
    expect(writes).toBe(609);
  });

  it("forgets idle keys and drops new keys past its bound, counting them", () => {
    const c = new Coalescer<number>({ intervalMs: 1_000, writesPerSecond: 10, maxKeys: 2 });
    c.offer("a", 1, 0);
    c.offer("b", 1, 0);
    c.offer("c", 1, 0);
    expect(c.takeDropped()).toBe(1);
    expect(c.takeDropped()).toBe(0);
    expect(c.take(0).map((w) => w.key)).toEqual(["a", "b"]);
    c.take(1_000);
    expect(c.size).toBe(0);
    c.offer("c", 1, 1_000);
    expect(c.drain()).toEqual([{ key: "c", value: 1, count: 1 }]);
  });
});
