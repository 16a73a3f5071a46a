import { inject } from "vitest";
import { type KubectlOptions, type KubectlResult, kubectlOn } from "../harness/kubectl.js";
import { eventually } from "./kube.js";

export { type KubectlResult, kubectlOn };

/**
 * The stack's kubectl (built from the same Kubernetes version) as cluster admin, or
 * impersonating a user and groups with `as`. Never throws on a refused request: tests
 * assert on `ok` and the message.
 */
export function kubectl(args: readonly string[], options: KubectlOptions = {}): Promise<KubectlResult> {
  return kubectlOn(inject("stack"), args, options);
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
