import type { TestProject } from "vitest/node";
import { provideStack } from "./global-setup.js";
import { hostNetworkAdded, snapshotHostNetwork } from "./host-network.js";

/**
 * The node project's own stack, with a real node: vitest runs a project's global setup only when
 * the run has test files of that project, so other runs never start kubelet or touch iptables.
 * Its teardown fails the run when the node left any iptables rule or chain, ipset, network
 * namespace or link behind.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const baseline = await snapshotHostNetwork();
  const teardown = await provideStack(project, { withNode: true });
  return async () => {
    await teardown();
    const left = hostNetworkAdded(baseline, await snapshotHostNetwork());
    const leftovers = [
      ...Object.values(left.chains).flat(),
      ...Object.values(left.rules).flat(),
      ...left.ipsets,
      ...left.netns,
      ...left.links,
    ];
    if (leftovers.length) throw new Error(`the test node left these behind:\n${leftovers.join("\n")}`);
  };
}
