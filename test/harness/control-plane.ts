import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { httpsGet } from "./http.js";
import { createCA, createSigningKey, issueCertificate, type KeyPair } from "./pki.js";
import { freePort } from "./ports.js";
import { type ManagedProcess, startProcess, waitUntil } from "./process.js";

const run = promisify(execFile);

/** Namespace where cert-manager keeps ClusterIssuer secrets (its cluster resource namespace). */
export const CERT_MANAGER_NAMESPACE = "cert-manager";

export interface ControlPlane {
  readonly kubeconfig: string;
  readonly server: string;
  readonly etcdUrl: string;
  readonly caFile: string;
  readonly admin: KeyPair;
  kubectl(args: readonly string[], stdin?: string): Promise<string>;
  /** Stops and starts kube-apiserver on the same port and etcd (for watch-resilience tests). */
  restartApiServer(): Promise<void>;
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
  /** Extra cert-manager flags; CERT_MANAGER_FLEET_ARGS when absent. */
  readonly certManagerArgs?: readonly string[];
}

export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const { binDir, stateDir } = options;
  const pki = join(stateDir, "pki");
  const logs = join(stateDir, "logs");
  await Promise.all([mkdir(pki, { recursive: true }), mkdir(logs, { recursive: true })]);
  const bin = (name: string) => join(binDir, name);

  const ca = await createCA(pki, "kubernetes-ca", "iot-tenant-operator test cluster CA");
  const [serving, admin, serviceAccountKey] = await Promise.all([
    issueCertificate(pki, ca, "apiserver", {
      subject: "/CN=kube-apiserver",
      dnsNames: ["localhost", "kubernetes", "kubernetes.default.svc"],
      ips: ["127.0.0.1"],
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
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      `--tls-cert-file=${serving.certFile}`,
      `--tls-private-key-file=${serving.keyFile}`,
      `--client-ca-file=${ca.certFile}`,
      `--service-account-issuer=${server}`,
      `--service-account-key-file=${serviceAccountKey}`,
      `--service-account-signing-key-file=${serviceAccountKey}`,
      "--service-cluster-ip-range=10.0.0.0/24",
      "--authorization-mode=RBAC",
      "--allow-privileged=false",
      "--disable-admission-plugins=ServiceAccount",
      "--endpoint-reconciler-type=none",
      `--cert-dir=${join(stateDir, "apiserver-certs")}`,
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
        "--controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,resourcequota-controller,clusterrole-aggregation-controller",
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
      kubectl,
      async restartApiServer() {
        await apiServer.stop();
        processes.splice(processes.indexOf(apiServer), 1);
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
