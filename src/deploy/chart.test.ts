import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { CHART_DIR, chartFiles, OPERATOR_IMAGE_COMMAND, OPERATOR_NODE_FLAGS } from "./chart.js";

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

describe("the operator container's command", () => {
  it("is the image's own entry point with the V8 flags NODE_OPTIONS cannot carry", () => {
    const dockerfile = readFileSync(join(import.meta.dirname, "../../Dockerfile"), "utf8");
    const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(dockerfile)?.[1] ?? "[]") as string[];
    const [node, ...rest] = OPERATOR_IMAGE_COMMAND;
    expect([node, ...rest.filter((arg) => !OPERATOR_NODE_FLAGS.includes(arg))]).toEqual(entrypoint);
    expect(OPERATOR_NODE_FLAGS).toContain("--optimize-for-size");
  });
});
