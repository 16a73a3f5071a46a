import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { performanceTable, type ResultsFile, readResults, resultsFileSchema, spread } from "./results.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

const valid: ResultsFile = {
  benchmark: "example",
  command: "npx tsx bench/example.ts --runs 3",
  machine: {
    cores: 2,
    cpuModel: "Example CPU",
    memoryBytes: 8 * 2 ** 30,
    kernel: "Linux 6.1.0",
    node: "v24.21.0",
    go: "go version go1.26.8 linux/amd64",
  },
  recordedAt: "2026-11-28T03:00:00.000Z",
  parameters: { size: 10 },
  runs: [{}, {}, {}],
  figures: [spread("10 things done", "s", [3, 1, 2])],
};

describe("spread", () => {
  it.each([
    { values: [3, 1, 2], median: 2, min: 1, max: 3 },
    { values: [4, 1, 3, 2], median: 2.5, min: 1, max: 4 },
    { values: [5, 5, 5], median: 5, min: 5, max: 5 },
  ])("of $values is median $median, range $min–$max", ({ values, median, min, max }) => {
    expect(spread("x", "ms", values)).toEqual({ label: "x", unit: "ms", values, median, min, max });
  });
});

describe("a results file", () => {
  it("is accepted with machine, command, at least three runs and one value per run", () => {
    expect(resultsFileSchema.safeParse(valid).success).toBe(true);
  });

  const { machine: _machine, ...noMachine } = valid;
  const { command: _command, ...noCommand } = valid;
  const { runs: _runs, ...noRuns } = valid;
  const { go: _go, ...machineWithoutGo } = valid.machine;
  it.each([
    ["no machine", noMachine],
    ["no command", noCommand],
    ["a command that is not a benchmark", { ...valid, command: "vi results.json" }],
    ["no runs", noRuns],
    ["two runs", { ...valid, runs: [{}, {}], figures: [spread("x", "s", [1, 2])] }],
    ["a machine without the go version", { ...valid, machine: machineWithoutGo }],
    ["a figure with fewer values than runs", { ...valid, runs: [{}, {}, {}, {}] }],
  ])("is refused with %s", (_, file) => {
    expect(resultsFileSchema.safeParse(file).success).toBe(false);
  });

  it("becomes a table row with its median and spread, and a line with its machine and command", () => {
    const table = performanceTable([valid]);
    expect(table).toContain("| `bench/example.ts` | 10 things done | 2.00 s | 1.00–3.00 s | 3 |");
    expect(table).toContain(
      "`npx tsx bench/example.ts --runs 3` on 2 cores (Example CPU), 8 GiB, Linux 6.1.0",
    );
  });
});

describe("the committed results", () => {
  it("each carry the machine, the exact command and at least three runs", async () => {
    const files = await readResults(repoRoot);
    expect(files.map((file) => file.benchmark).sort()).toEqual(
      [
        "acl-file-alternative",
        "broker-provisioning",
        "cutoff-under-load",
        "device-import",
        "broker-backends",
        "tenant-provisioning",
      ].sort(),
    );
  });
});

describe("the README's performance table", () => {
  it("is exactly what the committed results files give: no stale or hand-picked figure", async () => {
    const { readFile } = await import("node:fs/promises");
    const readme = await readFile(new URL("../../README.md", import.meta.url), "utf8");
    expect(readme).toContain(performanceTable(await readResults(repoRoot)));
  });
});
