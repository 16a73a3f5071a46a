import type { TestProject } from "vitest/node";
import { provideStack } from "./global-setup.js";

/**
 * The node project's own stack, with a real node: vitest runs a project's global setup only when
 * the run has test files of that project, so other runs never start kubelet or touch iptables.
 */
export default function setup(project: TestProject): Promise<() => Promise<void>> {
  return provideStack(project, { withNode: true });
}
