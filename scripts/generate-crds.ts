import { readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { renderCrdFiles } from "../src/api/crd.js";

/** Writes crds/*.yaml from the zod schemas in src/api and removes CRD files that no kind produces any more. */
const crdDir = resolve(dirname(fileURLToPath(import.meta.url)), "../crds");
const files = renderCrdFiles();
for (const existing of await readdir(crdDir)) {
  if (existing.endsWith(".yaml") && !files.has(existing)) await rm(join(crdDir, existing));
}
for (const [name, content] of files) {
  await writeFile(join(crdDir, name), content);
  console.log(`wrote crds/${name}`);
}
