import { describe, expect, it } from "vitest";
import { linearFit, percentile, summarize } from "./stats.js";

describe("percentile", () => {
  it.each([
    { values: [5, 1, 3, 2, 4], p: 50, expected: 3 },
    { values: [5, 1, 3, 2, 4], p: 100, expected: 5 },
    { values: Array.from({ length: 100 }, (_, i) => i + 1), p: 99, expected: 99 },
    { values: [7], p: 1, expected: 7 },
  ])("p$p of $values.length values is $expected", ({ values, p, expected }) => {
    expect(percentile(values, p)).toBe(expected);
  });

  it("is NaN without values", () => {
    expect(summarize([]).p99).toBeNaN();
  });
});

describe("linearFit", () => {
  it("recovers an exact line", () => {
    const fit = linearFit([1000, 2000, 4000].map((x) => ({ x, y: 2 + 0.01 * x })));
    expect(fit.intercept).toBeCloseTo(2);
    expect(fit.slope).toBeCloseTo(0.01);
  });
});
