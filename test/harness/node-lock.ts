import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { z } from "zod";
import {
  hostNetworkOwned,
  type NetworkOwner,
  removeHostNetwork,
  snapshotHostNetwork,
} from "./host-network.js";
import { processAlive } from "./process.js";

const run = promisify(execFile);

/**
 * kube-proxy and kube-router own machine-wide iptables chains and ipsets, so one node runs on a
 * machine at a time; this file names the process that runs it and what to clear if that process
 * dies without stopping the node (SIGKILL, a crash).
 */
const NODE_LOCK = "/run/iot-tenant-operator-node.lock";
/** The CNI network and bridge the node's pods are attached to, and the range their addresses come from. */
export const CNI_NETWORK = "iot-test";
export const BRIDGE = "iotbr0";
export const POD_CIDR = "10.244.0.0/24";
/** The processes a node runs (containerd's shims parent the containers); the control plane is not the node's. */
const NODE_PROCESSES = new Set([
  "containerd",
  "containerd-shim-runc-v2",
  "kubelet",
  "kube-proxy",
  "kube-router",
  "kube-scheduler",
]);
/** containerd 1.6 puts each shim's socket here, named by a hash of its address, namespace and id. */
const SHIM_SOCKETS = "/run/containerd/s";

const NodeRun = z.object({
  pid: z.number().int(),
  /** The stack's state directory; the node's own files are under `<stateDir>/node`. */
  stateDir: z.string(),
  /** /proc/sys/net/ipv4/ip_forward before the node set it (an older lock does not say). */
  ipForward: z.string().optional(),
});
type NodeRun = z.infer<typeof NodeRun>;

/**
 * Takes the machine's node lock for this process, first clearing what a dead holder left;
 * throws while a live process holds it.
 */
export async function takeNodeLock(stateDir: string): Promise<void> {
  await clearDeadNode();
  const holder = await readLock();
  if (holder && holder.pid !== process.pid) {
    throw new Error(`a test node already runs on this machine (stack pid ${holder.pid}, ${NODE_LOCK})`);
  }
  // A node that stopped without restoring everything (an older harness left IPv6 chains) is found by the names alone.
  const left = await clearNodeNetwork();
  if (left.length) console.log(`[node] cleared what an earlier node left:\n  ${left.join("\n  ")}`);
  const ipForward = (await readFile("/proc/sys/net/ipv4/ip_forward", "utf8")).trim();
  const lock: NodeRun = { pid: process.pid, stateDir, ipForward };
  await writeFile(NODE_LOCK, `${JSON.stringify(lock)}\n`);
}

/** Puts back what the node changed in the kernel's settings and lets the next node run. */
export async function releaseNodeLock(): Promise<void> {
  const held = await readLock();
  if (held?.ipForward) await writeFile("/proc/sys/net/ipv4/ip_forward", held.ipForward);
  await rm(NODE_LOCK, { force: true });
}

async function readLock(): Promise<NodeRun | undefined> {
  if (!existsSync(NODE_LOCK)) return undefined;
  const text = (await readFile(NODE_LOCK, "utf8")).trim();
  try {
    return NodeRun.parse(JSON.parse(text));
  } catch {
    // An older lock holds only the pid: nothing but the names below identifies its leftovers.
    return { pid: Number(text), stateDir: "" };
  }
}

/**
 * When the lock names a process that is gone, removes what its node left on the machine: its
 * processes (found by their command line naming its state directory) and their containers, the
 * shims' sockets, the mounts under its directory, and the iptables chains, ipsets, network
 * namespaces and bridge that only a node of this project makes (`nodeNetworkOwner`). Logs what it removed.
 */
export async function clearDeadNode(): Promise<void> {
  const dead = await readLock();
  if (!dead || dead.pid === process.pid || processAlive(dead.pid)) return;
  const removed: string[] = [];
  if (dead.stateDir) {
    const processes = await nodeProcesses(dead.stateDir);
    for (const p of processes) kill(p.pid);
    await Promise.all(processes.map((p) => gone(p.pid)));
    for (const socket of processes.map(shimSocket).filter((s) => s !== undefined)) {
      await rm(socket, { force: true });
    }
    removed.push(...processes.map((p) => `process ${p.pid} ${p.argv.join(" ").slice(0, 120)}`));
    const mounts = await unmountUnder([join(dead.stateDir, "node")]);
    removed.push(...mounts.map((m) => `mount ${m}`));
  }
  removed.push(...(await clearNodeNetwork()));
  if (dead.ipForward) await writeFile("/proc/sys/net/ipv4/ip_forward", dead.ipForward);
  await rm(NODE_LOCK, { force: true });
  console.log(
    `[node] cleared what the node of dead process ${dead.pid} left (${removed.length} items):\n  ${removed.join("\n  ")}`,
  );
}

/** Removes the node's iptables chains and rules, ipsets, pod network namespaces and bridge; returns what it removed. */
async function clearNodeNetwork(): Promise<string[]> {
  const network = hostNetworkOwned(
    await snapshotHostNetwork(),
    nodeNetworkOwner(await podNetworkNamespaces()),
  );
  await removeHostNetwork(network);
  return [
    ...Object.entries(network.chains).flatMap(([table, chains]) => chains.map((c) => `${table} chain ${c}`)),
    ...Object.entries(network.rules)
      .filter(([, rules]) => rules.length)
      .map(([table, rules]) => `${table}: ${rules.length} rules in and jumping to these chains`),
    ...network.ipsets.map((s) => `ipset ${s}`),
    ...network.netns.map((n) => `netns ${n}`),
    ...network.links.map((l) => `link ${l}`),
  ];
}

/**
 * What only a node of this project makes: the KUBE-* chains and ipsets (kube-proxy, kubelet and
 * kube-router; one node per machine), the CNI chains whose rules name its CNI network, its bridge,
 * and `podNetns`, the network namespaces of its pods.
 */
export function nodeNetworkOwner(podNetns: ReadonlySet<string>): NetworkOwner {
  return {
    chain: (name, rules) =>
      name.startsWith("KUBE-") ||
      (name.startsWith("CNI-") && rules.some((r) => r.includes(`name: \\"${CNI_NETWORK}\\"`))),
    ipset: (name) => /^(inet6:)?KUBE-/.test(name),
    netns: (name) => podNetns.has(name),
    link: (name) => name === BRIDGE,
  };
}

/** The `cni-*` network namespaces (containerd's name for a pod's) holding an address of the node's pod range. */
async function podNetworkNamespaces(): Promise<Set<string>> {
  const namespaces = (await run("ip", ["netns", "list"])).stdout
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith("cni-"));
  const podPrefix = POD_CIDR.split(".").slice(0, 3).join(".");
  const owned = new Set<string>();
  for (const ns of namespaces) {
    const { stdout } = await run("ip", ["-n", ns, "-o", "-4", "addr", "show"]);
    if (stdout.includes(` inet ${podPrefix}.`)) owned.add(ns);
  }
  return owned;
}

interface NodeProcess {
  readonly pid: number;
  readonly argv: readonly string[];
}

/** The node's processes of a stack (by command and state directory) and every process under them. */
async function nodeProcesses(stateDir: string): Promise<NodeProcess[]> {
  const all: Array<NodeProcess & { ppid: number }> = [];
  for (const entry of await readdir("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter(Boolean);
      // "pid (comm) state ppid …"; comm may hold spaces, the fields after its ")" do not.
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      all.push({ pid, argv, ppid });
    } catch {
      // Gone meanwhile.
    }
  }
  const roots = all.filter(
    (p) => NODE_PROCESSES.has(basename(p.argv[0] ?? "")) && p.argv.some((a) => a.includes(`${stateDir}/`)),
  );
  const found = new Map(roots.map((p) => [p.pid, p]));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all) {
      if (!found.has(p.pid) && found.has(p.ppid)) {
        found.set(p.pid, p);
        grew = true;
      }
    }
  }
  return [...found.values()];
}

/** The socket a killed shim leaves in SHIM_SOCKETS: sha256 of `<address>/<namespace>/<id>`. */
function shimSocket(p: NodeProcess): string | undefined {
  if (basename(p.argv[0] ?? "") !== "containerd-shim-runc-v2") return undefined;
  const flag = (name: string) => p.argv[p.argv.indexOf(name) + 1];
  const [address, namespace, id] = [flag("-address"), flag("-namespace"), flag("-id")];
  if (!address || !namespace || !id) return undefined;
  return join(
    SHIM_SOCKETS,
    createHash("sha256")
      .update(join(address, namespace, id))
      .digest("hex"),
  );
}

async function gone(pid: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const state = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    // A killed process its parent has not reaped yet (a zombie) holds nothing any more.
    if (!state || / Z /.test(state.slice(state.lastIndexOf(")")))) return;
    await sleep(50);
  }
  throw new Error(`process ${pid} still runs 10 s after SIGKILL`);
}

/** SIGKILL, for a process that may have ended since it was found. */
function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

/** Unmounts whatever is mounted under `dirs` (deepest first); returns the mount points. */
export async function unmountUnder(dirs: readonly string[]): Promise<string[]> {
  const mountPoints = (await readFile("/proc/mounts", "utf8"))
    .split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .filter((mountPoint) => dirs.some((d) => mountPoint === d || mountPoint.startsWith(`${d}/`)))
    .sort()
    .reverse();
  for (const mountPoint of mountPoints) await run("umount", ["-l", mountPoint]);
  return mountPoints;
}
