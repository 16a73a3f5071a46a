import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { CHART_DIR, chartFiles } from "./chart.js";

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [relative(CHART_DIR, path)];
  });
}

describe("the committed Helm chart", () => {
  it("is exactly what `npm run generate` makes from the code", () => {
    const expected = chartFiles();
    expect(filesUnder(CHART_DIR).sort()).toEqual([...expected.keys()].sort());
    for (const [path, content] of expected) {
      expect([path, readFileSync(join(CHART_DIR, path), "utf8")]).toEqual([path, content]);
    }
  });
});
