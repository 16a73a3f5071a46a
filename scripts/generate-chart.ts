import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { CHART_DIR, chartFiles } from "../src/deploy/chart.js";

/** Writes charts/iot-tenant-operator from src/deploy/chart.ts (run after generate:crds). */
await rm(CHART_DIR, { recursive: true, force: true });
for (const [path, content] of chartFiles()) {
  await mkdir(dirname(join(CHART_DIR, path)), { recursive: true });
  await writeFile(join(CHART_DIR, path), content);
  console.log(`wrote charts/iot-tenant-operator/${path}`);
}
