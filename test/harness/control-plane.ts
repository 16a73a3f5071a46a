import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { httpsGet } from "./http.js";
import { createCA, createSigningKey, issueCertificate, type KeyPair } from "./pki.js";
import { freePort } from "./ports.js";
import { type ManagedProcess, startProcess, waitUntil } from "./process.js";

const run = promisify(execFile);

/** The audit policy the README gives for Tenants and Devices; the stack runs with it, so it is proven valid. */
export const AUDIT_POLICY_FILE = fileURLToPath(
  new URL("../../src/audit/kube-apiserver-audit-policy.yaml", import.meta.url),
);

/** Namespace where cert-manager keeps ClusterIssuer secrets (its cluster resource namespace). */
export const CERT_MANAGER_NAMESPACE = "cert-manager";
/** Service ClusterIPs come from here (kube-proxy and the NetworkPolicy enforcer must agree). */
export const SERVICE_CIDR = "10.0.0.0/24";
/** The first address of SERVICE_CIDR, which the API server gives the `kubernetes` Service. */
const KUBERNETES_SERVICE_IP = "10.0.0.1";

export interface ControlPlane {
  readonly kubeconfig: string;
  readonly server: string;
  readonly etcdUrl: string;
  readonly caFile: string;
  readonly admin: KeyPair;
  /** kube-apiserver's audit log (JSON lines), written with the project's audit policy. */
  readonly auditLogFile: string;
  kubectl(args: readonly string[], stdin?: string): Promise<string>;
  /**
   * Stops and starts kube-apiserver on the same port and etcd (for watch-resilience tests);
   * `whileStopped` runs in between, e.g. to write to and compact etcd behind the watchers' backs.
   */
  restartApiServer(whileStopped?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

/**
 * cert-manager's API client limits and workers: its defaults (20 requests/s, burst 50, 5 workers per
 * controller) issue a few certificates a second, each costing about ten API requests. The stack runs
 * what the README tells fleet operators to set (Helm: `extraArgs`), so figures show the operator, not
 * cert-manager's client throttle; a bench can pass cert-manager's defaults to compare.
 */
export const CERT_MANAGER_FLEET_ARGS: readonly string[] = [
  "--kube-api-qps=300",
  "--kube-api-burst=600",
  "--concurrent-workers=16",
];

export interface ControlPlaneOptions {
  readonly binDir: string;
  readonly stateDir: string;
  /** A node will join: run the controllers that Deployments and Services need, and reach kubelets. */
  readonly withNode?: boolean;
  /** Extra cert-manager flags; CERT_MANAGER_FLEET_ARGS when absent. */
  readonly certManagerArgs?: readonly string[];
}

/** Controllers for what the operator's tests create; a cluster with a node also runs workloads. */
const CONTROLLERS = [
  "namespace-controller",
  "garbage-collector-controller",
  "serviceaccount-controller",
  "serviceaccount-token-controller",
  "resourcequota-controller",
  "clusterrole-aggregation-controller",
];
const WORKLOAD_CONTROLLERS = [
  "deployment-controller",
  "replicaset-controller",
  "endpoints-controller",
  "endpointslice-controller",
  // Lifts the node.kubernetes.io/not-ready taint a kubelet registers with, so Pods get scheduled.
  "node-lifecycle-controller",
  // kube-root-ca.crt in every namespace: each Pod's service account token volume projects it.
  "root-ca-certificate-publisher-controller",
];

export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const { binDir, stateDir, withNode = false } = options;
  const pki = join(stateDir, "pki");
  const logs = join(stateDir, "logs");
  const auditLogFile = join(logs, "kube-apiserver-audit.log");
  await Promise.all([mkdir(pki, { recursive: true }), mkdir(logs, { recursive: true })]);
  const bin = (name: string) => join(binDir, name);

  const ca = await createCA(pki, "kubernetes-ca", "iot-tenant-operator test cluster CA");
  // Pods reach the API server through the `kubernetes` Service, whose endpoint is this host's address.
  const hostIp = withNode ? await primaryAddress() : undefined;
  const [serving, admin, serviceAccountKey] = await Promise.all([
    issueCertificate(pki, ca, "apiserver", {
      subject: "/CN=kube-apiserver",
      dnsNames: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
      ips: ["127.0.0.1", ...(hostIp ? [hostIp, KUBERNETES_SERVICE_IP] : [])],
      usages: ["serverAuth"],
    }),
    issueCertificate(pki, ca, "admin", { subject: "/O=system:masters/CN=admin", usages: ["clientAuth"] }),
    createSigningKey(pki, "service-account"),
  ]);

  const [etcdPort, etcdPeerPort, apiPort, kcmPort] = await Promise.all([
    freePort(),
    freePort(),
    freePort(),
    freePort(),
  ]);
  const server = `https://127.0.0.1:${apiPort}`;
  const etcdUrl = `http://127.0.0.1:${etcdPort}`;
  const kubeconfig = join(stateDir, "kubeconfig");
  await writeKubeconfig(kubeconfig, server, ca.certFile, admin);

  const processes: ManagedProcess[] = [];
  const stopAll = async () => {
    for (const p of processes.reverse()) await p.stop();
    processes.length = 0;
  };

  try {
    const etcd = startProcess(
      "etcd",
      bin("etcd"),
      [
        "--name=default",
        `--data-dir=${join(stateDir, "etcd")}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
        "--unsafe-no-fsync=true",
        "--log-level=warn",
      ],
      { logFile: join(logs, "etcd.log") },
    );
    processes.push(etcd);
    await waitUntil(
      "etcd",
      async () => {
        const res = await fetch(`${etcdUrl}/health`);
        return res.ok && ((await res.json()) as { health?: string }).health === "true";
      },
      { timeoutMs: 30_000, process: etcd },
    );

    const apiServerArgs = [
      `--etcd-servers=${etcdUrl}`,
      `--bind-address=${hostIp ? "0.0.0.0" : "127.0.0.1"}`,
      `--advertise-address=${hostIp ?? "127.0.0.1"}`,
      `--secure-port=${apiPort}`,
      `--tls-cert-file=${serving.certFile}`,
      `--tls-private-key-file=${serving.keyFile}`,
      `--client-ca-file=${ca.certFile}`,
      `--service-account-issuer=${server}`,
      `--service-account-key-file=${serviceAccountKey}`,
      `--service-account-signing-key-file=${serviceAccountKey}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      "--authorization-mode=RBAC",
      "--allow-privileged=false",
      // Without a node nothing runs Pods, so nothing needs their tokens or the `kubernetes` endpoint.
      ...(withNode
        ? ["--endpoint-reconciler-type=lease"]
        : ["--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]),
      `--cert-dir=${join(stateDir, "apiserver-certs")}`,
      `--audit-policy-file=${AUDIT_POLICY_FILE}`,
      `--audit-log-path=${auditLogFile}`,
      "--audit-log-format=json",
      // exec and logs through kubelet, which trusts the cluster CA and asks the API server who may.
      ...(withNode
        ? [
            `--kubelet-client-certificate=${admin.certFile}`,
            `--kubelet-client-key=${admin.keyFile}`,
            // The node's name is no DNS name here.
            "--kubelet-preferred-address-types=InternalIP",
          ]
        : []),
    ];
    const startApiServer = async () => {
      const apiServer = startProcess("kube-apiserver", bin("kube-apiserver"), apiServerArgs, {
        logFile: join(logs, "kube-apiserver.log"),
      });
      processes.splice(1, 0, apiServer);
      await waitUntil(
        "kube-apiserver",
        async () => (await httpsGet(`${server}/readyz`, { caFile: ca.certFile })).body === "ok",
        { timeoutMs: 120_000, process: apiServer },
      );
      return apiServer;
    };
    let apiServer = await startApiServer();

    const controllerManagerProcess = startProcess(
      "kube-controller-manager",
      bin("kube-controller-manager"),
      [
        `--kubeconfig=${kubeconfig}`,
        "--leader-elect=false",
        `--controllers=${[...CONTROLLERS, ...(withNode ? WORKLOAD_CONTROLLERS : [])].join(",")}`,
        `--service-account-private-key-file=${serviceAccountKey}`,
        `--root-ca-file=${ca.certFile}`,
        "--bind-address=127.0.0.1",
        `--secure-port=${kcmPort}`,
        "--concurrent-gc-syncs=5",
        // A CRD installed after start is counted only from the next full quota sync (default 5 m).
        "--resource-quota-sync-period=5s",
        "--concurrent-namespace-syncs=5",
      ],
      { logFile: join(logs, "kube-controller-manager.log") },
    );
    processes.push(controllerManagerProcess);
    await waitUntil(
      "kube-controller-manager",
      async () => (await httpsGet(`https://127.0.0.1:${kcmPort}/healthz`, { insecure: true })).body === "ok",
      { timeoutMs: 60_000, process: controllerManagerProcess },
    );

    const kubectl = async (args: readonly string[], stdin?: string) => {
      const child = run(bin("kubectl"), [`--kubeconfig=${kubeconfig}`, ...args], { maxBuffer: 64 << 20 });
      child.child.stdin?.on("error", () => undefined);
      child.child.stdin?.end(stdin ?? "");
      return (await child).stdout;
    };
    await kubectl(["apply", "--server-side", "-f", join(binDir, "cert-manager-crds")]);
    await kubectl(["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
    await kubectl(["create", "namespace", CERT_MANAGER_NAMESPACE]);
    const certManager = startProcess(
      "cert-manager",
      bin("cert-manager-controller"),
      [
        `--kubeconfig=${kubeconfig}`,
        `--cluster-resource-namespace=${CERT_MANAGER_NAMESPACE}`,
        ...(options.certManagerArgs ?? CERT_MANAGER_FLEET_ARGS),
      ],
      { logFile: join(logs, "cert-manager.log") },
    );
    processes.push(certManager);

    return {
      kubeconfig,
      server,
      etcdUrl,
      caFile: ca.certFile,
      admin,
      auditLogFile,
      kubectl,
      async restartApiServer(whileStopped) {
        await apiServer.stop();
        processes.splice(processes.indexOf(apiServer), 1);
        await whileStopped?.();
        apiServer = await startApiServer();
      },
      stop: stopAll,
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

async function writeKubeconfig(file: string, server: string, caFile: string, user: KeyPair): Promise<void> {
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "local", cluster: { server, "certificate-authority": caFile } }],
    users: [{ name: "user", user: { "client-certificate": user.certFile, "client-key": user.keyFile } }],
    contexts: [{ name: "local", context: { cluster: "local", user: "user" } }],
    "current-context": "local",
  };
  await writeFile(file, JSON.stringify(config, null, 2), { mode: 0o600 });
}

/**
 * Writes a marker key to etcd and compacts its history up to it: every watcher's resourceVersion
 * is then older than the oldest revision etcd keeps, so resuming a watch answers 410 Gone.
 */
export async function compactEtcd(etcdUrl: string): Promise<void> {
  const call = async (path: string, body: unknown) => {
    const response = await fetch(`${etcdUrl}${path}`, { method: "POST", body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`etcd ${path}: ${response.status} ${await response.text()}`);
    return (await response.json()) as { header?: { revision?: string } };
  };
  const base64 = (text: string) => Buffer.from(text).toString("base64");
  const { header } = await call("/v3/kv/put", {
    key: base64("/faults/compaction-marker"),
    value: base64("x"),
  });
  await call("/v3/kv/compaction", { revision: header?.revision, physical: true });
}

/** This host's address on its default route (the node's InternalIP, which Pods can reach). */
async function primaryAddress(): Promise<string> {
  const { stdout } = await run("ip", ["-4", "-o", "route", "get", "1.1.1.1"]);
  const address = / src (\S+)/.exec(stdout)?.[1];
  if (!address) throw new Error(`no source address in: ${stdout}`);
  return address;
}
