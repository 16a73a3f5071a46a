import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { type ControlPlane, SERVICE_CIDR } from "./control-plane.js";
import { restoreHostNetwork, snapshotHostNetwork } from "./host-network.js";
import { httpGet } from "./http.js";
import { BRIDGE, CNI_NETWORK, POD_CIDR, releaseNodeLock, takeNodeLock, unmountUnder } from "./node-lock.js";
import { freePort } from "./ports.js";
import { type ManagedProcess, startProcess, waitUntil } from "./process.js";

const run = promisify(execFile);

/** The node's name. */
export const NODE_NAME = "iot-node";
/** The cluster DNS Service's address (kube-system/kube-dns, CoreDNS behind it), in SERVICE_CIDR. */
export const CLUSTER_DNS_IP = "10.0.0.10";

export interface TestNode {
  readonly name: string;
  /** Image references by image name (pause, probe), all imported into containerd, none pulled. */
  readonly images: Readonly<Record<string, string>>;
  stop(): Promise<void>;
}

export interface NodeOptions {
  /** kubelet, kube-proxy, kube-scheduler, kube-router (test/tools/build-node.sh). */
  readonly nodeBinDir: string;
  /** OCI archives and their refs (test/tools/build-images.sh). */
  readonly imagesDir: string;
  readonly stateDir: string;
  readonly controlPlane: ControlPlane;
}

/**
 * A real node beside the control plane: containerd (own config, state and socket) with runc and
 * the CNI bridge, host-local and portmap plugins; kubelet; kube-proxy in iptables mode; kube-router's
 * network policy controller enforcing NetworkPolicy; and kube-scheduler to place Pods on it.
 * Components use the control plane's admin identity: this is a test cluster of one node.
 */
export async function startNode(options: NodeOptions): Promise<TestNode> {
  const { nodeBinDir, imagesDir, controlPlane } = options;
  const dir = join(options.stateDir, "node");
  const logs = join(options.stateDir, "logs");
  const paths = {
    containerdRoot: join(dir, "containerd", "root"),
    containerdState: join(dir, "containerd", "state"),
    socket: join(dir, "containerd.sock"),
    cniConf: join(dir, "cni"),
    ipam: join(dir, "cni-ipam"),
    kubeletRoot: join(dir, "kubelet"),
    // runc's state under the node's directory, not the machine-wide /run/containerd/runc.
    runcRoot: join(dir, "runc"),
  };
  await Promise.all([mkdir(paths.cniConf, { recursive: true }), mkdir(logs, { recursive: true })]);
  await takeNodeLock(options.stateDir);
  const images = await readImageRefs(imagesDir);
  const processes: ManagedProcess[] = [];
  const ctr = (args: readonly string[]) =>
    run("ctr", ["--address", paths.socket, "--namespace", "k8s.io", ...args]);

  const baseline = await snapshotHostNetwork();
  const stop = async () => {
    await removePods(controlPlane, ctr);
    for (const p of processes.reverse()) await p.stop();
    processes.length = 0;
    await restoreHostNetwork(baseline);
    await unmountUnder([paths.containerdRoot, paths.containerdState, paths.kubeletRoot]);
    await releaseNodeLock();
  };

  try {
    await writeFile("/proc/sys/net/ipv4/ip_forward", "1");
    await writeFile(join(dir, "containerd.toml"), containerdConfig(paths, images.pause ?? ""));
    await writeFile(join(paths.cniConf, "10-iot.conflist"), JSON.stringify(cniConfig(paths.ipam)));
    const containerd = startProcess("containerd", "containerd", ["--config", join(dir, "containerd.toml")], {
      logFile: join(logs, "containerd.log"),
    });
    processes.push(containerd);
    await waitUntil(
      "containerd",
      async () => {
        await ctr(["version"]);
        return true;
      },
      {
        timeoutMs: 30_000,
        process: containerd,
      },
    );
    for (const name of Object.keys(images)) await ctr(["images", "import", join(imagesDir, `${name}.tar`)]);

    const [
      schedulerPort,
      kubeletPort,
      kubeletHealthPort,
      proxyHealthPort,
      proxyMetricsPort,
      routerHealthPort,
    ] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
    const kubeconfig = controlPlane.kubeconfig;
    const scheduler = startProcess(
      "kube-scheduler",
      join(nodeBinDir, "kube-scheduler"),
      [
        `--kubeconfig=${kubeconfig}`,
        `--authentication-kubeconfig=${kubeconfig}`,
        `--authorization-kubeconfig=${kubeconfig}`,
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        `--secure-port=${schedulerPort}`,
      ],
      { logFile: join(logs, "kube-scheduler.log") },
    );
    processes.push(scheduler);

    await writeFile(
      join(dir, "kubelet.json"),
      JSON.stringify(
        kubeletConfig({ ...paths, port: kubeletPort, healthPort: kubeletHealthPort }, controlPlane),
      ),
    );
    const kubelet = startProcess(
      "kubelet",
      join(nodeBinDir, "kubelet"),
      [
        `--config=${join(dir, "kubelet.json")}`,
        `--kubeconfig=${kubeconfig}`,
        `--root-dir=${paths.kubeletRoot}`,
        `--hostname-override=${NODE_NAME}`,
      ],
      { logFile: join(logs, "kubelet.log") },
    );
    processes.push(kubelet);
    await waitUntil(
      "kubelet (node Ready and schedulable)",
      async () =>
        (
          await controlPlane.kubectl([
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status} {.spec.taints}",
          ])
        ).trim() === "True",
      { timeoutMs: 90_000, intervalMs: 500, process: kubelet },
    );

    const proxy = startProcess(
      "kube-proxy",
      join(nodeBinDir, "kube-proxy"),
      [
        `--kubeconfig=${kubeconfig}`,
        "--proxy-mode=iptables",
        `--hostname-override=${NODE_NAME}`,
        `--cluster-cidr=${POD_CIDR}`,
        `--healthz-bind-address=127.0.0.1:${proxyHealthPort}`,
        `--metrics-bind-address=127.0.0.1:${proxyMetricsPort}`,
        "--conntrack-max-per-core=0",
      ],
      { logFile: join(logs, "kube-proxy.log") },
    );
    processes.push(proxy);
    const router = startProcess(
      "kube-router",
      join(nodeBinDir, "kube-router"),
      [
        `--kubeconfig=${kubeconfig}`,
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        "--enable-cni=false",
        `--hostname-override=${NODE_NAME}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        `--health-port=${routerHealthPort}`,
        "--metrics-port=0",
        "--iptables-sync-period=10s",
      ],
      { logFile: join(logs, "kube-router.log") },
    );
    processes.push(router);
    await waitUntil(
      "kube-proxy",
      async () => (await httpGet(`http://127.0.0.1:${proxyHealthPort}/healthz`)).status === 200,
      { timeoutMs: 60_000, process: proxy },
    );
    await waitUntil(
      "kube-router",
      async () => (await httpGet(`http://127.0.0.1:${routerHealthPort}/healthz`)).status === 200,
      { timeoutMs: 60_000, process: router },
    );
    await controlPlane.kubectl(
      ["apply", "--server-side", "-f", "-"],
      clusterDns(images.coredns ?? "")
        .map((o) => JSON.stringify(o))
        .join("\n"),
    );
    await controlPlane.kubectl([
      "rollout",
      "status",
      "-n",
      "kube-system",
      "deployment/coredns",
      "--timeout=120s",
    ]);
    return { name: NODE_NAME, images, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * CoreDNS as the cluster's DNS, the way clusters deploy it: a Deployment in kube-system labelled
 * k8s-app=kube-dns (the label tenant policies let DNS traffic reach) behind the kube-dns Service.
 */
function clusterDns(image: string): object[] {
  const labels = { "k8s-app": "kube-dns" };
  const meta = (name: string) => ({ name, namespace: "kube-system", labels });
  const corefile = `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
}
`;
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: meta("coredns") },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRole",
      metadata: { name: "system:coredns", labels },
      rules: [
        { apiGroups: [""], resources: ["services", "pods", "namespaces"], verbs: ["list", "watch"] },
        { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "ClusterRoleBinding",
      metadata: { name: "system:coredns", labels },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "system:coredns" },
      subjects: [{ kind: "ServiceAccount", name: "coredns", namespace: "kube-system" }],
    },
    { apiVersion: "v1", kind: "ConfigMap", metadata: meta("coredns"), data: { Corefile: corefile } },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: meta("coredns"),
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: "coredns",
            dnsPolicy: "Default",
            securityContext: {
              runAsNonRoot: true,
              seccompProfile: { type: "RuntimeDefault" },
              // Port 53 without root or a capability.
              sysctls: [{ name: "net.ipv4.ip_unprivileged_port_start", value: "53" }],
            },
            containers: [
              {
                name: "coredns",
                image,
                imagePullPolicy: "Never",
                volumeMounts: [{ name: "config", mountPath: "/etc/coredns", readOnly: true }],
                readinessProbe: { httpGet: { path: "/ready", port: 8181 } },
                livenessProbe: { httpGet: { path: "/health", port: 8080 } },
                securityContext: {
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ["ALL"] },
                },
              },
            ],
            volumes: [{ name: "config", configMap: { name: "coredns" } }],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: meta("kube-dns"),
      spec: {
        clusterIP: CLUSTER_DNS_IP,
        selector: labels,
        ports: [
          { name: "dns", port: 53, protocol: "UDP" },
          { name: "dns-tcp", port: 53, protocol: "TCP" },
        ],
      },
    },
  ];
}

async function readImageRefs(imagesDir: string): Promise<Record<string, string>> {
  const lines = (await readFile(join(imagesDir, "refs"), "utf8")).trim().split("\n");
  return Object.fromEntries(lines.map((line) => line.split(" ") as [string, string]));
}

function containerdConfig(
  paths: {
    containerdRoot: string;
    containerdState: string;
    socket: string;
    cniConf: string;
    runcRoot: string;
  },
  pauseImage: string,
): string {
  return `version = 2
root = ${JSON.stringify(paths.containerdRoot)}
state = ${JSON.stringify(paths.containerdState)}
[grpc]
  address = ${JSON.stringify(paths.socket)}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${JSON.stringify(pauseImage)}
  # This machine denies lowering oom_score_adj (no CAP_SYS_RESOURCE): runc would fail to start
  # the sandbox ("can't get final child's PID from pipe: EOF") when kubelet asks for -998.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = ${JSON.stringify(paths.runcRoot)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = ${JSON.stringify(paths.cniConf)}
`;
}

function cniConfig(ipamDir: string) {
  return {
    cniVersion: "1.0.0",
    name: CNI_NETWORK,
    plugins: [
      {
        type: "bridge",
        bridge: BRIDGE,
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: {
          type: "host-local",
          ranges: [[{ subnet: POD_CIDR }]],
          routes: [{ dst: "0.0.0.0/0" }],
          dataDir: ipamDir,
        },
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  };
}

function kubeletConfig(
  settings: { socket: string; port: number; healthPort: number },
  controlPlane: ControlPlane,
) {
  return {
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    // This kernel mounts the cgroup v1 hierarchy (cgroup2 only at /sys/fs/cgroup/unified);
    // Kubernetes 1.36's kubelet refuses cgroup v1 unless told not to.
    failCgroupV1: false,
    cgroupDriver: "cgroupfs",
    containerRuntimeEndpoint: `unix://${settings.socket}`,
    // The API server reaches the kubelet (exec, logs) with its client certificate, signed by the cluster CA.
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: controlPlane.caFile },
    },
    authorization: { mode: "Webhook" },
    port: settings.port,
    readOnlyPort: 0,
    healthzBindAddress: "127.0.0.1",
    healthzPort: settings.healthPort,
    podCIDR: POD_CIDR,
    resolvConf: "/etc/resolv.conf",
    clusterDNS: [CLUSTER_DNS_IP],
    clusterDomain: "cluster.local",
    failSwapOn: false,
    protectKernelDefaults: false,
    localStorageCapacityIsolation: false,
    enforceNodeAllocatable: [],
    // A test machine's disk is shared and may be full-ish: never evict or garbage-collect the imported images.
    evictionHard: {},
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    serializeImagePulls: false,
    // Mounted Secrets (the broker's CRL) are refreshed at each pod sync; the default is a minute.
    syncFrequency: "10s",
  };
}

/**
 * Deletes every Pod while kubelet still runs, so it stops their containers and calls CNI DEL
 * (which releases each network namespace, veth and host-local address), then removes whatever
 * containerd still holds.
 */
async function removePods(
  controlPlane: ControlPlane,
  ctr: (args: readonly string[]) => Promise<{ stdout: string }>,
): Promise<void> {
  try {
    // Workload controllers first, or they would replace the Pods deleted next.
    await controlPlane.kubectl([
      "delete",
      "deployments,replicasets",
      "--all",
      "--all-namespaces",
      "--wait=false",
    ]);
    await controlPlane.kubectl([
      "delete",
      "pods",
      "--all",
      "--all-namespaces",
      "--grace-period=1",
      "--timeout=60s",
    ]);
    await waitUntil(
      "pod sandboxes removed",
      async () => (await ctr(["containers", "ls", "-q"])).stdout.trim() === "",
      {
        timeoutMs: 60_000,
        intervalMs: 500,
      },
    );
  } catch {
    // The control plane or kubelet may already be gone; cleanUpHost removes what is left.
  }
}
