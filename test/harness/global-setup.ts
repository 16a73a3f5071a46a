import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { killServersOnSignal } from "./process.js";
import { type StackEnv, startStack } from "./stack.js";

declare module "vitest" {
  export interface ProvidedContext {
    stack: StackEnv;
  }
}

/** Starts the whole stack once for the integration tests and stops it after them, pass or fail. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "iot-stack-"));
  const started = Date.now();
  const stack = await startStack(stateDir);
  console.log(`[stack] ready in ${Date.now() - started} ms (state in ${stateDir})`);
  project.provide("stack", stack.env);
  return async () => {
    await stack.stop();
    if (!process.env.KEEP_STACK_STATE) await rm(stateDir, { recursive: true, force: true });
  };
}
