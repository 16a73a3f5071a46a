import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
/** Every iptables table of both families, as "<family> <table>" (kube-proxy and kubelet write IPv6 chains too). */
const FAMILIES = { ip4: "iptables", ip6: "ip6tables" } as const;
const TABLES = (["ip4", "ip6"] as const).flatMap((family) =>
  (["filter", "nat", "mangle", "raw"] as const).map((table) => ({
    family,
    table,
    key: `${family} ${table}`,
  })),
);

/** What a node adds to the machine's network: iptables chains and rules, ipsets, network namespaces, links. */
export interface HostNetwork {
  /** By "<family> <table>" (e.g. "ip4 filter"). */
  readonly chains: Readonly<Record<string, readonly string[]>>;
  readonly rules: Readonly<Record<string, readonly string[]>>;
  readonly ipsets: readonly string[];
  readonly netns: readonly string[];
  readonly links: readonly string[];
}

export async function snapshotHostNetwork(): Promise<HostNetwork> {
  const chains: Record<string, string[]> = {};
  const rules: Record<string, string[]> = {};
  for (const { family, table, key } of TABLES) {
    const lines = (await run(`${FAMILIES[family]}-save`, ["-t", table])).stdout.split("\n");
    chains[key] = lines.filter((l) => l.startsWith(":")).map((l) => l.slice(1).split(" ")[0] ?? "");
    rules[key] = lines.filter((l) => l.startsWith("-A "));
  }
  const lines = (out: string) =>
    out
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean);
  const [ipsets, netns, links] = await Promise.all([
    run("ipset", ["list", "-n"]).then((r) => lines(r.stdout)),
    // "cni-… (id: 0)"
    run("ip", ["netns", "list"]).then((r) => lines(r.stdout).map((l) => l.split(" ")[0] ?? "")),
    // "7: vethb4f029eb@if2: <…>"
    run("ip", ["-o", "link", "show"]).then((r) =>
      lines(r.stdout).map((l) => (l.split(": ")[1] ?? "").split("@")[0] ?? ""),
    ),
  ]);
  return { chains, rules, ipsets, netns, links };
}

/** What `now` has that `baseline` did not: the node's leftovers (empty lists when it cleaned up). */
export function hostNetworkAdded(baseline: HostNetwork, now: HostNetwork): HostNetwork {
  const added = (before: readonly string[] = [], after: readonly string[] = []) =>
    after.filter((x) => !before.includes(x));
  const perTable = (
    before: Readonly<Record<string, readonly string[]>>,
    after: Readonly<Record<string, readonly string[]>>,
  ) => Object.fromEntries(TABLES.map(({ key }) => [key, added(before[key], after[key])]));
  return {
    chains: perTable(baseline.chains, now.chains),
    rules: perTable(baseline.rules, now.rules),
    ipsets: added(baseline.ipsets, now.ipsets),
    netns: added(baseline.netns, now.netns),
    links: added(baseline.links, now.links),
  };
}

/** How to recognise what one owner made, by the names it gives things. */
export interface NetworkOwner {
  /** A chain is the owner's when this says so of its name and rules. */
  chain(name: string, rules: readonly string[]): boolean;
  ipset(name: string): boolean;
  netns(name: string): boolean;
  link(name: string): boolean;
}

/**
 * The part of `now` that `owner` made: its chains, the rules of other chains that jump to them,
 * and its ipsets, network namespaces and links. Nothing else is selected, whoever else added it.
 */
export function hostNetworkOwned(now: HostNetwork, owner: NetworkOwner): HostNetwork {
  const chains: Record<string, string[]> = {};
  const rules: Record<string, string[]> = {};
  for (const { key } of TABLES) {
    const all = now.rules[key] ?? [];
    const rulesOf = (chain: string) => all.filter((r) => r.split(" ")[1] === chain);
    const owned = (now.chains[key] ?? []).filter((c) => owner.chain(c, rulesOf(c)));
    chains[key] = owned;
    rules[key] = all.filter((r) => {
      const target = / -[jg] (\S+)/.exec(r)?.[1];
      return owned.includes(r.split(" ")[1] ?? "") || (target !== undefined && owned.includes(target));
    });
  }
  return {
    chains,
    rules,
    ipsets: now.ipsets.filter((s) => owner.ipset(s)),
    netns: now.netns.filter((n) => owner.netns(n)),
    links: now.links.filter((l) => owner.link(l)),
  };
}

/** Deletes from the machine every iptables rule and chain, ipset, network namespace and link in `part`. */
export async function removeHostNetwork(part: HostNetwork): Promise<void> {
  for (const { family, key } of TABLES) {
    const chains = part.chains[key] ?? [];
    const rules = part.rules[key] ?? [];
    if (!chains.length && !rules.length) continue;
    // iptables-restore parses the saved quoting of comments; flushing a chain covers its own rules.
    const script = [
      `*${key.split(" ")[1]}`,
      ...rules.filter((r) => !chains.includes(r.split(" ")[1] ?? "")).map((r) => `-D ${r.slice(3)}`),
      ...chains.map((c) => `-F ${c}`),
      ...chains.map((c) => `-X ${c}`),
      "COMMIT",
      "",
    ].join("\n");
    const child = run(`${FAMILIES[family]}-restore`, ["--noflush"]);
    child.child.stdin?.end(script);
    await child;
  }
  // After the rules: an ipset that a rule still matches on cannot be destroyed.
  for (const set of part.ipsets) await run("ipset", ["destroy", set]);
  for (const ns of part.netns) await run("ip", ["netns", "delete", ns]);
  // A veth goes with its peer's namespace: deleting it may find it gone.
  for (const link of part.links) await run("ip", ["link", "delete", link]).catch(() => undefined);
}

/**
 * Puts the machine's network back to `baseline`: deletes every iptables rule and chain, ipset,
 * network namespace and link made since. kube-proxy and kube-router are not trusted to do it:
 * `kube-router --cleanup-config` (v2.1.0) panics here with a nil pointer dereference after
 * "Could not get ipvs family information from the kernel".
 */
export async function restoreHostNetwork(baseline: HostNetwork): Promise<void> {
  await removeHostNetwork(hostNetworkAdded(baseline, await snapshotHostNetwork()));
}
