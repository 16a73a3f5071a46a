/**
 * The committed record behind every published figure: a results file per benchmark, with the
 * machine, the exact command and every run, and the figures as median and spread over the runs.
 * `npm run perf:table` turns these files into the README's performance table.
 */
import { execFile } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { cpus, release, totalmem, type } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { z } from "zod";

/** Fewer runs cannot show a spread worth publishing. */
export const MIN_RUNS = 3;

const machineSchema = z.object({
  cores: z.number().int().positive(),
  cpuModel: z.string().min(1),
  memoryBytes: z.number().positive(),
  kernel: z.string().min(1),
  node: z.string().min(1),
  go: z.string().min(1),
});
export type Machine = z.infer<typeof machineSchema>;

const figureSchema = z.object({
  /** What was measured, with its size, e.g. "5 Tenants to Ready, operator". */
  label: z.string().min(1),
  unit: z.string().min(1),
  /** One value per run, in run order. */
  values: z.array(z.number()).min(MIN_RUNS),
  median: z.number(),
  min: z.number(),
  max: z.number(),
});
export type Figure = z.infer<typeof figureSchema>;

export const resultsFileSchema = z
  .object({
    benchmark: z.string().regex(/^[a-z0-9-]+$/),
    command: z.string().startsWith("npx tsx bench/"),
    machine: machineSchema,
    recordedAt: z.iso.datetime(),
    parameters: z.record(z.string(), z.unknown()),
    runs: z.array(z.unknown()).min(MIN_RUNS),
    figures: z.array(figureSchema).min(1),
  })
  .refine((file) => file.figures.every((figure) => figure.values.length === file.runs.length), {
    message: "every figure needs one value per run",
  });
export type ResultsFile = z.infer<typeof resultsFileSchema>;

/** Median (mean of the middle two for an even count) and range of one figure over the runs. */
export function spread(label: string, unit: string, values: readonly number[]): Figure {
  const sorted = values.toSorted((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median =
    sorted.length % 2 === 1
      ? (sorted[middle] as number)
      : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
  return {
    label,
    unit,
    values: [...values],
    median,
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
  };
}

const run = promisify(execFile);

export async function describeMachine(): Promise<Machine> {
  const go = await run("go", ["version"]).then(
    ({ stdout }) => stdout.trim(),
    () => "not installed",
  );
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    memoryBytes: totalmem(),
    kernel: `${type()} ${release()}`,
    node: process.version,
    go,
  };
}

export const RESULTS_DIR = "bench/results";

/** Validates and writes `bench/results/<benchmark>.json`, stamped with the machine and this process's command. */
export async function writeResults(
  repoRoot: string,
  results: Pick<ResultsFile, "benchmark" | "parameters" | "runs" | "figures">,
): Promise<string> {
  const script = relative(repoRoot, process.argv[1] ?? "");
  const file = resultsFileSchema.parse({
    ...results,
    command: ["npx tsx", script, ...process.argv.slice(2)].join(" "),
    machine: await describeMachine(),
    recordedAt: new Date().toISOString(),
  });
  const path = join(repoRoot, RESULTS_DIR, `${results.benchmark}.json`);
  await mkdir(join(repoRoot, RESULTS_DIR), { recursive: true });
  await writeFile(path, `${JSON.stringify(file, null, 2)}\n`);
  return path;
}

/** Every committed results file, parsed; throws naming the file that lacks machine, command or runs. */
export async function readResults(repoRoot: string): Promise<ResultsFile[]> {
  const dir = join(repoRoot, RESULTS_DIR);
  const names = (await readdir(dir)).filter((name) => name.endsWith(".json")).sort();
  return Promise.all(
    names.map(async (name) => {
      const parsed = resultsFileSchema.safeParse(JSON.parse(await readFile(join(dir, name), "utf8")));
      if (!parsed.success) throw new Error(`${RESULTS_DIR}/${name}: ${z.prettifyError(parsed.error)}`);
      return parsed.data;
    }),
  );
}

const number = (value: number) =>
  Math.abs(value) >= 100 ? value.toFixed(0) : Math.abs(value) >= 10 ? value.toFixed(1) : value.toFixed(2);

function machineLine(machine: Machine): string {
  const memory = `${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB`;
  return `${machine.cores} cores (${machine.cpuModel}), ${memory}, ${machine.kernel}, node ${machine.node}, ${machine.go}`;
}

/** The README's performance table: one row per figure, then the machine and command of each file. */
export function performanceTable(files: readonly ResultsFile[]): string {
  const rows = files.flatMap((file) =>
    file.figures.map(
      (figure) =>
        `| \`bench/${file.benchmark}.ts\` | ${figure.label} | ${number(figure.median)} ${figure.unit} | ${number(figure.min)}–${number(figure.max)} ${figure.unit} | ${figure.values.length} |`,
    ),
  );
  const sources = files.map(
    (file) =>
      `- \`${RESULTS_DIR}/${file.benchmark}.json\` (${file.recordedAt.slice(0, 10)}): \`${file.command}\` on ${machineLine(file.machine)}`,
  );
  return [
    "| benchmark | figure | median | spread (min–max) | runs |",
    "|---|---|---|---|---|",
    ...rows,
    "",
    ...sources,
    "",
  ].join("\n");
}
