import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, inject, it } from "vitest";
import { repoRoot } from "../test/harness/stack.js";

const run = promisify(execFile);

/**
 * The demo's packet-level section runs as users run it (`npm run demo -- --with-node
 * --show-denied`), on the node suite's stack (one node per machine), so it cannot rot.
 */
describe("npm run demo -- --with-node --show-denied", () => {
  it("prints a same-tenant pod's connection made and the other tenant's pod's refused, by packets on the node", async () => {
    const dir = await mkdtemp(join(tmpdir(), "iot-demo-test-"));
    const stackFile = join(dir, "stack.json");
    await writeFile(stackFile, JSON.stringify(inject("stack")));
    try {
      const demo = await run(
        join(repoRoot, "node_modules/.bin/tsx"),
        [join(repoRoot, "scripts/demo.ts"), "--with-node", "--show-denied"],
        { cwd: repoRoot, env: { ...process.env, IOT_DEMO_STACK: stackFile }, maxBuffer: 64 << 20 },
      ).catch((error: { stdout?: string; stderr?: string }) => {
        throw new Error(`the demo failed:\n${error.stdout}\n${error.stderr}`);
      });
      const lines = demo.stdout.split("\n");
      expect(lines).toContainEqual(
        expect.stringMatching(
          /^ {3}acme\/probe-twin -> acme\/probe \(10\.244\.0\.\d+:8080\) TCP: connected \(OK probe\)$/,
        ),
      );
      expect(lines).toContainEqual(
        expect.stringMatching(
          /^ {3}globex\/probe -> acme\/probe \(10\.244\.0\.\d+:8080\) TCP: refused \(FAILED .+\)$/,
        ),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 400_000);
});
