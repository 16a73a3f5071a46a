import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { killServersOnSignal } from "./process.js";
import { type StackEnv, type StackOptions, startStack } from "./stack.js";

declare module "vitest" {
  export interface ProvidedContext {
    stack: StackEnv;
  }
}

/** Projects whose tests need the stack; a run of the unit tests alone starts nothing. */
const STACK_PROJECTS = new Set(["integration", "operator"]);

/**
 * Starts the whole stack once for every project of the run that needs it and stops it after
 * them, pass or fail.
 */
export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  if (!project.vitest.projects.some((p) => STACK_PROJECTS.has(p.name))) return undefined;
  return provideStack(project, {});
}

/** Starts a stack, provides it to `project`'s tests as `inject("stack")`, returns its teardown. */
export async function provideStack(
  project: TestProject,
  options: StackOptions,
): Promise<() => Promise<void>> {
  killServersOnSignal();
  const stateDir = await mkdtemp(join(tmpdir(), "iot-stack-"));
  const started = Date.now();
  const stack = await startStack(stateDir, options);
  console.log(`[stack] ready in ${Date.now() - started} ms (state in ${stateDir})`);
  project.provide("stack", stack.env);
  return async () => {
    await stack.stop();
    if (!process.env.KEEP_STACK_STATE) await rm(stateDir, { recursive: true, force: true });
  };
}
