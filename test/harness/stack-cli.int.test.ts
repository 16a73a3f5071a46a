import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { repoRoot } from "./stack.js";

const run = promisify(execFile);

/** DESIGN §8: `npm run stack:up` starts the stack in the background and writes `.stack/env`; `stack:down` stops it. */
describe("the stack CLI", () => {
  it("starts a stack in the background, describes it in env, and stops it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "stack-cli-"));
    const env = { ...process.env, IOT_STACK_DIR: dir };
    let lines = "";
    const cli = join(repoRoot, "test/harness/stack-cli.ts");
    const tsx = join(repoRoot, "node_modules/.bin/tsx");
    try {
      const up = await run(tsx, [cli, "up"], { env, cwd: repoRoot });
      expect(up.stdout).toContain(`source ${join(dir, "env")}`);
      lines = await readFile(join(dir, "env"), "utf8");
      for (const name of [
        "KUBECONFIG",
        "BROKER_HOST",
        "BROKER_MTLS_PORT",
        "BROKER_ADMIN_PORT",
        "BROKER_ADMIN_USERNAME",
        "BROKER_ADMIN_PASSWORD",
        "BROKER_CA_FILE",
      ]) {
        expect(lines).toMatch(new RegExp(`^export ${name}='[^']+'$`, "m"));
      }
      // The settings are usable as they are: source them and ask the API server and the stack's kubectl.
      const { stdout } = await run("bash", [
        "-c",
        `source '${join(dir, "env")}' && kubectl get namespace default -o name`,
      ]);
      expect(stdout.trim()).toBe("namespace/default");
    } finally {
      const down = await run(tsx, [cli, "down"], { env, cwd: repoRoot });
      expect(down.stdout).toContain("stack stopped");
    }
    expect(existsSync(join(dir, "env"))).toBe(false);
    // Everything it started is gone: the same settings reach no API server any more.
    const stopped = await run("bash", [
      "-c",
      `${lines}\nkubectl get namespace default --request-timeout=3s`,
    ]).then(
      () => "still running",
      (error: { stderr?: string }) => error.stderr ?? "",
    );
    expect(stopped).toMatch(/connection to the server .* was refused|Unable to connect/);
  });

  it("starts a 3-node NATS cluster instead of Mosquitto with --broker nats and describes it in env", async () => {
    const dir = await mkdtemp(join(tmpdir(), "stack-cli-nats-"));
    const env = { ...process.env, IOT_STACK_DIR: dir };
    const cli = join(repoRoot, "test/harness/stack-cli.ts");
    const tsx = join(repoRoot, "node_modules/.bin/tsx");
    try {
      await run(tsx, [cli, "up", "--broker", "nats"], { env, cwd: repoRoot });
      const lines = await readFile(join(dir, "env"), "utf8");
      expect(lines).toMatch(/^export BROKER_KIND='nats'$/m);
      expect(lines).toMatch(
        /^export NATS_URLS='nats:\/\/127\.0\.0\.1:\d+,nats:\/\/127\.0\.0\.1:\d+,nats:\/\/127\.0\.0\.1:\d+'$/m,
      );
      for (const name of [
        "KUBECONFIG",
        "NATS_MQTT_PORTS",
        "NATS_CLUSTER_SIZE",
        "NATS_KEYS_SECRET",
        "BROKER_CA_FILE",
      ])
        expect(lines).toMatch(new RegExp(`^export ${name}='[^']+'$`, "m"));
      // The operator's keys are where BROKER_KIND=nats reads them: a Secret in its namespace.
      const { stdout } = await run("bash", [
        "-c",
        `source '${join(dir, "env")}' && kubectl get secret -n iot-system "$NATS_KEYS_SECRET" -o jsonpath='{.data}'`,
      ]);
      expect(Object.keys(JSON.parse(stdout)).sort()).toEqual(
        ["authAccount", "calloutUser", "calloutXkey", "operator", "systemAccount", "systemUser"].sort(),
      );
    } finally {
      await run(tsx, [cli, "down"], { env, cwd: repoRoot });
    }
    expect(existsSync(join(dir, "env"))).toBe(false);
  });
});
