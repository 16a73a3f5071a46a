/**
 * `npm run stack:up` / `npm run stack:down`: the local stack in the background,
 * its connection settings in `.stack/env` (DESIGN §8).
 */
import { spawn } from "node:child_process";
import { existsSync, openSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { clearDeadNode } from "./node-lock.js";
import { processAlive } from "./process.js";
import { repoRoot, stackVariables, startNatsStack, startStack, writeEnvFile } from "./stack.js";

/** `.stack/` in the repository; IOT_STACK_DIR moves it (the stack CLI's own test does). */
const stackDir = process.env.IOT_STACK_DIR ?? join(repoRoot, ".stack");
const envFile = join(stackDir, "env");
const pidFile = join(stackDir, "pid");
const logFile = join(stackDir, "stack.log");

/** `--broker nats` starts a 3-node NATS cluster instead of Mosquitto. */
function brokerKind(args: readonly string[]): "mosquitto" | "nats" {
  const index = args.indexOf("--broker");
  if (index === -1) return "mosquitto";
  const kind = args[index + 1];
  if (kind !== "mosquitto" && kind !== "nats")
    throw new Error(`--broker must be mosquitto or nats, not ${kind}`);
  // The node-backed stack runs the chart's Mosquitto; NATS on the node is not built yet.
  if (kind === "nats" && args.includes("--with-node")) throw new Error("--with-node runs Mosquitto only");
  return kind;
}

async function runningPid(): Promise<number | undefined> {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number((await readFile(pidFile, "utf8")).trim());
  return Number.isInteger(pid) && processAlive(pid) ? pid : undefined;
}

/** `up --with-node` adds a real node (kubelet, containerd, CNI, kube-proxy, kube-router). */
const withNode = process.argv.includes("--with-node");

async function up(): Promise<void> {
  const pid = await runningPid();
  if (pid !== undefined && existsSync(envFile)) {
    console.log(`stack already running (pid ${pid}); settings in ${envFile}`);
    return;
  }
  await mkdir(stackDir, { recursive: true });
  await rm(envFile, { force: true });
  const log = openSync(logFile, "w");
  const broker = brokerKind(process.argv.slice(3));
  const serveArgs = [import.meta.filename, "serve", "--broker", broker, ...(withNode ? ["--with-node"] : [])];
  const server = spawn(process.execPath, [...process.execArgv, ...serveArgs], {
    detached: true,
    stdio: ["ignore", log, log],
    cwd: repoRoot,
  });
  server.unref();
  const deadline = Date.now() + 10 * 60_000;
  while (Date.now() < deadline) {
    if (existsSync(envFile)) {
      console.log(`stack up (pid ${server.pid}); run: source ${envFile}`);
      return;
    }
    if (server.pid === undefined || !processAlive(server.pid)) {
      throw new Error(`stack failed to start; see ${logFile}:\n${await readFile(logFile, "utf8")}`);
    }
    await sleep(250);
  }
  throw new Error(`stack not ready after 10 minutes; see ${logFile}`);
}

async function serve(): Promise<void> {
  const stateDir = join(stackDir, "state");
  // A node this command ran and that was killed may still hold mounts and processes in stateDir.
  await clearDeadNode();
  await rm(stateDir, { recursive: true, force: true });
  await mkdir(stateDir, { recursive: true });
  const stack =
    brokerKind(process.argv.slice(3)) === "nats"
      ? await startNatsStack(stateDir)
      : await startStack(stateDir, { withNode }).then((s) => ({
          variables: stackVariables(s.env),
          binDir: s.env.binDir,
          stop: s.stop,
        }));
  await writeEnvFile(envFile, stack.variables, stack.binDir);
  await writeFile(pidFile, `${process.pid}\n`);
  console.log(`stack ready; settings in ${envFile}`);
  const shutdown = async () => {
    await stack.stop();
    await rm(envFile, { force: true });
    await rm(pidFile, { force: true });
    process.exit(0);
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
  setInterval(() => {}, 1 << 30);
}

async function down(): Promise<void> {
  const pid = await runningPid();
  if (pid === undefined) {
    console.log("stack is not running");
    await rm(envFile, { force: true });
    return;
  }
  process.kill(pid, "SIGTERM");
  // A node first deletes its Pods (kubelet tears down their sandboxes) and restores the host's network.
  const deadline = Date.now() + 120_000;
  while (processAlive(pid) && Date.now() < deadline) await sleep(200);
  if (processAlive(pid)) process.kill(pid, "SIGKILL");
  await rm(envFile, { force: true });
  await rm(pidFile, { force: true });
  console.log("stack stopped");
}

const commands: Record<string, () => Promise<void>> = { up, down, serve };
const command = commands[process.argv[2] ?? ""];
if (!command) {
  console.error("usage: stack-cli up [--with-node] [--broker mosquitto|nats] | down");
  process.exit(2);
}
command().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
