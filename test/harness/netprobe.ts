import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { Kubectl } from "./kubectl.js";
import { waitUntil } from "./process.js";
import type { StackEnv } from "./stack.js";

const run = promisify(execFile);

/** The port every probe answers on, over TCP and UDP (test/tools/images/netprobe). */
export const PROBE_PORT = 8080;

export interface Probe {
  readonly namespace: string;
  readonly name: string;
  readonly ip: string;
}

export interface ProbeSpec {
  readonly namespace: string;
  readonly name: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** Ports to answer on besides PROBE_PORT; one below 1024 is let bind without root. */
  readonly extraPorts?: readonly number[];
}

export interface Outcome {
  readonly connected: boolean;
  /** netprobe's answer: "OK <pod name>" or "FAILED <error>". */
  readonly output: string;
}

/** Probe pods on a stack's node, driven with the stack's kubectl: what the node tests and the demo share. */
export interface Probes {
  /** Starts probe Pods and waits until each runs with an address. */
  start(specs: readonly ProbeSpec[]): Promise<Probe[]>;
  /**
   * Runs `command` inside the probe Pod; `ok` is its exit status. Throws when kubectl could not run
   * it at all, so a refusal is only ever the command's own failure.
   */
  exec(from: Probe, command: readonly string[]): Promise<{ ok: boolean; output: string }>;
  /** A real connection from `from` to `address` over TCP, UDP or HTTP, made by netprobe inside the Pod. */
  connect(from: Probe, protocol: "tcp" | "udp" | "http", address: string, port?: number): Promise<Outcome>;
}

export function probesOn(stack: Pick<StackEnv, "node">, kubectl: Kubectl): Probes {
  const image = stack.node?.images.probe;
  if (!image) throw new Error("the stack runs no node (start it with --with-node)");
  return {
    async start(specs) {
      const applied = await kubectl(["apply", "-f", "-"], {
        stdin: specs.map((s) => JSON.stringify(probePod(s, image))).join("\n"),
      });
      if (!applied.ok) throw new Error(applied.stderr);
      return Promise.all(
        specs.map(async ({ namespace, name }) => {
          let probe: Probe | undefined;
          await waitUntil(
            `probe ${namespace}/${name} running`,
            async () => {
              const got = await kubectl([
                "get",
                "pod",
                "-n",
                namespace,
                name,
                "-o",
                "jsonpath={.status.phase} {.status.podIP}",
              ]);
              const [phase, ip] = got.stdout.split(" ");
              if (phase === "Running" && ip) probe = { namespace, name, ip };
              return probe !== undefined;
            },
            { timeoutMs: 120_000, intervalMs: 250 },
          );
          return probe as Probe;
        }),
      );
    },
    async exec(from, command) {
      const result = await kubectl(["exec", "-n", from.namespace, from.name, "--", ...command]);
      if (!result.ok && /^(error:|Error from server)/m.test(result.stderr)) {
        throw new Error(
          `could not run ${command[0]} in ${from.namespace}/${from.name}: ${result.stderr.trim()}`,
        );
      }
      return { ok: result.ok, output: `${result.stdout}${result.stderr}`.trim() };
    },
    async connect(from, protocol, address, port = PROBE_PORT) {
      const result = await kubectl([
        "exec",
        "-n",
        from.namespace,
        from.name,
        "--",
        "/bin/netprobe",
        "connect",
        protocol,
        `${address}:${port}`,
      ]);
      const output = result.stdout.trim();
      // A denial counts only when netprobe itself ran and saw the connection fail, never when exec failed.
      if (!output.startsWith("OK ") && !output.startsWith("FAILED ")) {
        throw new Error(`netprobe in ${from.namespace}/${from.name} did not run: ${result.stderr.trim()}`);
      }
      return { connected: result.ok && output.startsWith("OK "), output };
    },
  };
}

/**
 * Waits until kube-router has put the probes' addresses into its policy ipsets, so a denial seen
 * afterwards is the policy's and not a race with the enforcer's first sync.
 */
export async function enforced(probes: readonly Probe[]): Promise<void> {
  await waitUntil(
    "kube-router has synced the probes' policies",
    async () => {
      const { stdout } = await run("ipset", ["list"], { maxBuffer: 16 << 20 });
      const members = new Set(stdout.split("\n").map((line) => line.split(" ")[0]));
      return probes.every((p) => members.has(p.ip));
    },
    { timeoutMs: 60_000, intervalMs: 250 },
  );
}

/** A Pod that passes the restricted Pod Security level of tenant namespaces and answers on its ports. */
function probePod(spec: ProbeSpec, image: string) {
  const ports = [PROBE_PORT, ...(spec.extraPorts ?? [])];
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: spec.name, namespace: spec.namespace, labels: { ...spec.labels } },
    spec: {
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 1,
      securityContext: {
        runAsNonRoot: true,
        seccompProfile: { type: "RuntimeDefault" },
        ...(ports.some((p) => p < 1024)
          ? { sysctls: [{ name: "net.ipv4.ip_unprivileged_port_start", value: "0" }] }
          : {}),
      },
      containers: [
        {
          name: "probe",
          image,
          imagePullPolicy: "Never",
          args: ["serve", ...ports.map(String)],
          securityContext: {
            allowPrivilegeEscalation: false,
            readOnlyRootFilesystem: true,
            capabilities: { drop: ["ALL"] },
          },
        },
      ],
    },
  };
}
