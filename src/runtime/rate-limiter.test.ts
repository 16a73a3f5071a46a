import { describe, expect, it } from "vitest";
import { ManualClock } from "./clock.js";
import {
  controllerRateLimiter,
  ExponentialFailureRateLimiter,
  MaxOfRateLimiter,
  TokenBucketRateLimiter,
} from "./rate-limiter.js";

describe("ExponentialFailureRateLimiter", () => {
  it.each([
    { failures: 1, delayMs: 5 },
    { failures: 2, delayMs: 10 },
    { failures: 5, delayMs: 80 },
    { failures: 18, delayMs: 655_360 },
    { failures: 19, delayMs: 1_000_000 },
    { failures: 2000, delayMs: 1_000_000 },
  ])("failure #$failures waits $delayMs ms", ({ failures, delayMs }) => {
    const limiter = new ExponentialFailureRateLimiter(5, 1_000_000);
    const delays = Array.from({ length: failures }, () => limiter.when("key"));
    expect(delays.at(-1)).toBe(delayMs);
    expect(limiter.retries("key")).toBe(failures);
  });

  it("keeps keys apart and starts over after forget", () => {
    const limiter = new ExponentialFailureRateLimiter(100, 10_000);
    expect([limiter.when("a"), limiter.when("a"), limiter.when("b")]).toEqual([100, 200, 100]);
    limiter.forget("a");
    expect(limiter.retries("a")).toBe(0);
    expect(limiter.when("a")).toBe(100);
  });
});

describe("TokenBucketRateLimiter", () => {
  it("lets a burst through, then spaces retries at qps, refilling as time passes", () => {
    const clock = new ManualClock();
    const bucket = new TokenBucketRateLimiter(10, 3, clock);
    expect([bucket.when(), bucket.when(), bucket.when()]).toEqual([0, 0, 0]);
    expect(bucket.when()).toBeCloseTo(100);
    expect(bucket.when()).toBeCloseTo(200);
    clock.advance(1_000);
    // 10 tokens refilled minus the 2 borrowed, capped at the burst of 3.
    expect([bucket.when(), bucket.when(), bucket.when()]).toEqual([0, 0, 0]);
    expect(bucket.when()).toBeCloseTo(100);
  });
});

describe("MaxOfRateLimiter", () => {
  it("waits for the slower of per-key backoff and the global bucket", () => {
    const clock = new ManualClock();
    const limiter = new MaxOfRateLimiter(
      new ExponentialFailureRateLimiter(1, 60_000),
      new TokenBucketRateLimiter(1, 2, clock),
    );
    // Two keys failing once each: backoff says 1 ms, the bucket lets two through at once, then 1 qps.
    expect(limiter.when("a")).toBe(1);
    expect(limiter.when("b")).toBe(1);
    expect(limiter.when("c")).toBeCloseTo(1_000);
    expect(limiter.retries("a")).toBe(1);
    limiter.forget("a");
    expect(limiter.retries("a")).toBe(0);
  });

  it("defaults to client-go's 5 ms … 1000 s with 10 qps / burst 100", () => {
    const limiter = controllerRateLimiter(new ManualClock());
    expect(limiter.when("k")).toBe(5);
    expect(limiter.when("k")).toBe(10);
  });
});
