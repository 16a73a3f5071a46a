import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);
const TABLES = ["filter", "nat", "mangle", "raw"] as const;

/** What a node adds to the machine's network: iptables chains and rules, ipsets, network namespaces, links. */
export interface HostNetwork {
  readonly chains: Readonly<Record<string, readonly string[]>>;
  readonly rules: Readonly<Record<string, readonly string[]>>;
  readonly ipsets: readonly string[];
  readonly netns: readonly string[];
  readonly links: readonly string[];
}

export async function snapshotHostNetwork(): Promise<HostNetwork> {
  const chains: Record<string, string[]> = {};
  const rules: Record<string, string[]> = {};
  for (const table of TABLES) {
    const lines = (await run("iptables-save", ["-t", table])).stdout.split("\n");
    chains[table] = lines.filter((l) => l.startsWith(":")).map((l) => l.slice(1).split(" ")[0] ?? "");
    rules[table] = lines.filter((l) => l.startsWith("-A "));
  }
  const words = (out: string) =>
    out
      .split("\n")
      .map((l) => l.trim().split(/[\s@:]+/)[0] ?? "")
      .filter(Boolean);
  const [ipsets, netns, links] = await Promise.all([
    run("ipset", ["list", "-n"]).then((r) => words(r.stdout)),
    run("ip", ["netns", "list"]).then((r) => words(r.stdout)),
    run("ip", ["-o", "link", "show"]).then((r) =>
      r.stdout
        .split("\n")
        .filter(Boolean)
        .map((l) => (l.split(": ")[1] ?? "").split("@")[0] ?? ""),
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
  ) => Object.fromEntries(TABLES.map((t) => [t, added(before[t], after[t])]));
  return {
    chains: perTable(baseline.chains, now.chains),
    rules: perTable(baseline.rules, now.rules),
    ipsets: added(baseline.ipsets, now.ipsets),
    netns: added(baseline.netns, now.netns),
    links: added(baseline.links, now.links),
  };
}

/**
 * Puts the machine's network back to `baseline`: deletes every iptables rule and chain, ipset,
 * network namespace and link made since. kube-proxy and kube-router are not trusted to do it:
 * `kube-router --cleanup-config` (v2.1.0) panics here with a nil pointer dereference after
 * "Could not get ipvs family information from the kernel".
 */
export async function restoreHostNetwork(baseline: HostNetwork): Promise<void> {
  const extra = hostNetworkAdded(baseline, await snapshotHostNetwork());
  for (const table of TABLES) {
    const chains = extra.chains[table] ?? [];
    const rules = extra.rules[table] ?? [];
    if (!chains.length && !rules.length) continue;
    // iptables-restore parses the saved quoting of comments; flushing a new chain covers its own rules.
    const script = [
      `*${table}`,
      ...rules.filter((r) => !chains.includes(r.split(" ")[1] ?? "")).map((r) => `-D ${r.slice(3)}`),
      ...chains.map((c) => `-F ${c}`),
      ...chains.map((c) => `-X ${c}`),
      "COMMIT",
      "",
    ].join("\n");
    const child = run("iptables-restore", ["--noflush"]);
    child.child.stdin?.end(script);
    await child;
  }
  for (const set of extra.ipsets) await run("ipset", ["destroy", set]);
  for (const ns of extra.netns) await run("ip", ["netns", "delete", ns]);
  for (const link of extra.links) await run("ip", ["link", "delete", link]).catch(() => undefined);
}
