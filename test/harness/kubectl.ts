import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import type { StackEnv } from "./stack.js";

const run = promisify(execFile);

export interface KubectlResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

export interface KubectlOptions {
  readonly stdin?: string;
  readonly as?: { readonly user: string; readonly groups?: readonly string[] };
}

/** A kubectl bound to one stack, as tests and the demo use it. */
export type Kubectl = (args: readonly string[], options?: KubectlOptions) => Promise<KubectlResult>;

/**
 * The stack's kubectl (built from the same Kubernetes version) against `stack`, as cluster admin
 * or impersonating a user and groups with `as`. Never throws on a refused request: callers look
 * at `ok` and the message.
 */
export async function kubectlOn(
  stack: Pick<StackEnv, "binDir" | "kubeconfig">,
  args: readonly string[],
  options: KubectlOptions = {},
): Promise<KubectlResult> {
  const impersonation = options.as
    ? [`--as=${options.as.user}`, ...(options.as.groups ?? []).map((g) => `--as-group=${g}`)]
    : [];
  const child = run(
    join(stack.binDir, "kubectl"),
    [`--kubeconfig=${stack.kubeconfig}`, ...impersonation, ...args],
    {
      maxBuffer: 64 << 20,
    },
  );
  // kubectl may exit before reading stdin (a refused request): that is its answer, not an error here.
  child.child.stdin?.on("error", () => undefined);
  child.child.stdin?.end(options.stdin ?? "");
  try {
    const { stdout, stderr } = await child;
    return { ok: true, stdout, stderr };
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string };
    return { ok: false, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}
