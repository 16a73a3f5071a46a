import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { inject } from "vitest";

const run = promisify(execFile);

/** The stack's helm (built with the control plane) against its cluster, its caches in the stack's state. */
export async function helm(args: readonly string[]): Promise<string> {
  const stack = inject("stack");
  const home = join(stack.stateDir, "helm");
  const { stdout } = await run(join(stack.binDir, "helm"), [`--kubeconfig=${stack.kubeconfig}`, ...args], {
    env: { ...process.env, HELM_CACHE_HOME: home, HELM_CONFIG_HOME: home, HELM_DATA_HOME: home },
    maxBuffer: 16 << 20,
  });
  return stdout;
}
