import { describe, expect, it } from "vitest";
import { type HostNetwork, hostNetworkOwned } from "./host-network.js";
import { nodeNetworkOwner } from "./node-lock.js";

const owner = nodeNetworkOwner(new Set(["cni-ours"]));

const host: HostNetwork = {
  chains: {
    "ip4 filter": ["INPUT", "FORWARD", "KUBE-FORWARD", "DOCKER"],
    "ip4 nat": ["POSTROUTING", "CNI-aaa", "CNI-bbb"],
  },
  rules: {
    "ip4 filter": [
      "-A INPUT -j KUBE-FIREWALL-GONE",
      '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
      "-A FORWARD -j DOCKER",
      "-A FORWARD -s 10.0.0.0/8 -j ACCEPT",
      "-A KUBE-FORWARD -j ACCEPT",
      "-A DOCKER -j RETURN",
    ],
    "ip4 nat": [
      '-A POSTROUTING -s 10.244.0.2/32 -m comment --comment "name: \\"iot-test\\" id: \\"1\\"" -j CNI-aaa',
      '-A POSTROUTING -s 172.17.0.2/32 -m comment --comment "name: \\"other\\" id: \\"2\\"" -j CNI-bbb',
      '-A CNI-aaa -m comment --comment "name: \\"iot-test\\" id: \\"1\\"" -j MASQUERADE',
      '-A CNI-bbb -m comment --comment "name: \\"other\\" id: \\"2\\"" -j MASQUERADE',
    ],
  },
  ipsets: ["KUBE-SRC-X", "inet6:KUBE-DST-Y", "docker-set"],
  netns: ["cni-ours", "cni-theirs"],
  links: ["lo", "eth0", "iotbr0", "docker0"],
};

describe("hostNetworkOwned with the node's names: what a killed node left, and nothing else", () => {
  const owned = hostNetworkOwned(host, owner);

  it.each([
    ["ip4 filter", ["KUBE-FORWARD"]],
    ["ip4 nat", ["CNI-aaa"]],
    ["ip6 filter", []],
  ])("selects in %s only the owner's chains: %j", (table, chains) => {
    expect(owned.chains[table]).toEqual(chains);
  });

  it("selects the rules in the owner's chains and those jumping to them, no other rule of a built-in chain", () => {
    expect(owned.rules["ip4 filter"]).toEqual([
      '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
      "-A KUBE-FORWARD -j ACCEPT",
    ]);
    expect(owned.rules["ip4 nat"]).toEqual([
      '-A POSTROUTING -s 10.244.0.2/32 -m comment --comment "name: \\"iot-test\\" id: \\"1\\"" -j CNI-aaa',
      '-A CNI-aaa -m comment --comment "name: \\"iot-test\\" id: \\"1\\"" -j MASQUERADE',
    ]);
  });

  it("selects only the owner's ipsets, network namespaces and links", () => {
    expect([owned.ipsets, owned.netns, owned.links]).toEqual([
      ["KUBE-SRC-X", "inet6:KUBE-DST-Y"],
      ["cni-ours"],
      ["iotbr0"],
    ]);
  });
});
