import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { inject } from "vitest";
import type { StackEnv } from "../harness/stack.js";
import { eventually } from "./kube.js";

const run = promisify(execFile);

export interface KubectlResult {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/**
 * The stack's kubectl (built from the same Kubernetes version) as cluster admin, or
 * impersonating a user and groups with `as`. Never throws on a refused request: tests
 * assert on `ok` and the message.
 */
export function kubectl(
  args: readonly string[],
  options: { stdin?: string; as?: { user: string; groups?: readonly string[] } } = {},
): Promise<KubectlResult> {
  return kubectlOn(inject("stack"), args, options);
}

/** kubectl against a given stack (a test's own instance); otherwise as `kubectl`. */
export async function kubectlOn(
  stack: Pick<StackEnv, "binDir" | "kubeconfig">,
  args: readonly string[],
  options: { stdin?: string; as?: { user: string; groups?: readonly string[] } } = {},
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

/** Server-side applies objects (as JSON documents) as cluster admin; throws if the API server refuses. */
export async function applyObjects(objects: readonly unknown[]): Promise<void> {
  const result = await kubectl(
    ["apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-"],
    {
      stdin: objects.map((o) => JSON.stringify(o)).join("\n"),
    },
  );
  if (!result.ok) throw new Error(`kubectl apply failed: ${result.stderr}`);
}

/**
 * Whether `kubectl get <args>` answers NotFound. Any other failure (a timeout, a 403, a refused
 * connection) throws: it proves nothing about the object's absence.
 */
export async function notFound(args: readonly string[]): Promise<boolean> {
  const result = await kubectl(["get", ...args]);
  if (result.ok) return false;
  if (/NotFound|not found/.test(result.stderr)) return true;
  throw new Error(`kubectl get ${args.join(" ")}: ${result.stderr}`);
}

/** Resolves once `kubectl get <args>` answers NotFound. */
export function eventuallyNotFound(args: readonly string[], timeoutMs = 60_000): Promise<true> {
  return eventually(
    `${args.join(" ")} NotFound`,
    async () => ((await notFound(args)) ? true : undefined),
    timeoutMs,
  );
}
