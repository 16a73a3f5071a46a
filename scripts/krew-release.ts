/**
 * Builds the kubectl plugin's release archive and its krew manifest, for the release step:
 *
 *   npm run krew:release -- --url-base https://github.com/OWNER/iot-tenant-operator/releases/download/v0.1.0
 *
 * writes dist/krew/kubectl-iot-v<version>.tar.gz (upload it to the release) and plugins/iot.yaml with
 * the archive's URL and sha256. The archive is reproducible (fixed file times, owners and order, gzip
 * without a timestamp), so the same tree gives the same hash.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { build } from "esbuild";
import { stringify } from "yaml";
import { KREW_PLUGIN, krewArchiveName, krewManifest } from "../src/deploy/krew.js";
import { repoRoot } from "../test/harness/stack.js";

const run = promisify(execFile);
const { values } = parseArgs({ options: { "url-base": { type: "string" } } });
const urlBase = values["url-base"];
if (!urlBase) {
  console.error("pass --url-base: where the release's files are downloaded from");
  process.exit(2);
}

const { version } = JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string };
const out = join(repoRoot, "dist/krew");
const stage = join(out, "stage");
await rm(out, { recursive: true, force: true });
await mkdir(join(stage, "dist/cli"), { recursive: true });

// The CLI reads its version from ../../package.json, as it does in the package.
await build({
  entryPoints: [join(repoRoot, "bin/kubectl-iot.js")],
  outfile: join(stage, "dist/cli/kubectl-iot.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node24",
  legalComments: "external",
  // Bundled CommonJS dependencies call require().
  banner: {
    js: 'import { createRequire as __cr } from "node:module"; const require = __cr(import.meta.url);',
  },
});
await writeFile(
  join(stage, "package.json"),
  `${JSON.stringify({ name: "kubectl-iot", version, type: "module" })}\n`,
);
const launcher = join(stage, `kubectl-${KREW_PLUGIN}`);
await writeFile(
  launcher,
  '#!/bin/sh\n# kubectl iot: the iot-tenant-operator command line as a kubectl plugin (needs Node.js 24).\nexec node "$(dirname "$0")/dist/cli/kubectl-iot.mjs" "$@"\n',
);
await chmod(launcher, 0o755);
await run("cp", [join(repoRoot, "LICENSE"), stage]);

const archive = join(out, krewArchiveName(version));
await run("sh", [
  "-c",
  'tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - . | gzip -9n > "$2"',
  "tar",
  stage,
  archive,
]);
const sha256 = createHash("sha256")
  .update(await readFile(archive))
  .digest("hex");
const manifest = krewManifest({
  version,
  uri: `${urlBase.replace(/\/$/, "")}/${krewArchiveName(version)}`,
  sha256,
});
await mkdir(join(repoRoot, "plugins"), { recursive: true });
await writeFile(join(repoRoot, `plugins/${KREW_PLUGIN}.yaml`), stringify(manifest, { lineWidth: 0 }));
console.log(`${archive}\nsha256 ${sha256}\nplugins/${KREW_PLUGIN}.yaml`);
