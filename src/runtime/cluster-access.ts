import { readFileSync } from "node:fs";
import { Agent, type RequestOptions } from "node:https";
import { isIPv6 } from "node:net";
import { dirname, isAbsolute, join } from "node:path";
import { parse } from "yaml";
import { z } from "zod";

/**
 * What KubeClient needs to reach the API server: the current cluster's URL and the credentials for
 * each request. @kubernetes/client-node's KubeConfig is one; `loadClusterAccess` below is the
 * operator's own, because loading that library costs the long-running process about 70 MB of
 * resident memory (bench/operator-scale.ts) for the two methods it uses.
 */
export interface ClusterAccess {
  getCurrentCluster(): { readonly server: string } | null;
  applyToHTTPSOptions(options: RequestOptions): Promise<void>;
}

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
/** The kubelet rotates projected tokens; re-read the file this often, as client-go does. */
const TOKEN_MAX_AGE_MS = 60_000;

const kubeconfigSchema = z.object({
  "current-context": z.string().optional(),
  clusters: z.array(
    z.object({
      name: z.string(),
      cluster: z.looseObject({
        server: z.string(),
        "certificate-authority": z.string().optional(),
        "certificate-authority-data": z.string().optional(),
        "insecure-skip-tls-verify": z.boolean().optional(),
        "tls-server-name": z.string().optional(),
        "proxy-url": z.string().optional(),
      }),
    }),
  ),
  users: z.array(
    z.object({
      name: z.string(),
      user: z.looseObject({
        "client-certificate": z.string().optional(),
        "client-certificate-data": z.string().optional(),
        "client-key": z.string().optional(),
        "client-key-data": z.string().optional(),
        token: z.string().optional(),
        tokenFile: z.string().optional(),
      }),
    }),
  ),
  contexts: z.array(
    z.object({ name: z.string(), context: z.object({ cluster: z.string(), user: z.string() }) }),
  ),
});

/** How to reach one API server: its URL, TLS material, and a bearer token (fixed or from a file). */
export interface ClusterCredentials {
  readonly server: string;
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  readonly insecure?: boolean;
  readonly serverName?: string;
  readonly token?: string;
  readonly tokenFile?: string;
}

/**
 * The current context of a kubeconfig as credentials; undefined when it needs what only the full
 * client library does (exec plugins, auth providers, basic auth, a proxy). Paths are relative to the file.
 */
export function kubeconfigCredentials(text: string, path: string): ClusterCredentials | undefined {
  const config = kubeconfigSchema.parse(parse(text));
  const context = config.contexts.find((c) => c.name === config["current-context"])?.context;
  const cluster = config.clusters.find((c) => c.name === context?.cluster)?.cluster;
  const user = config.users.find((u) => u.name === context?.user)?.user;
  if (!cluster || !user) return undefined;
  const handled = new Set([
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "token",
    "tokenFile",
  ]);
  if (Object.keys(user).some((field) => !handled.has(field)) || cluster["proxy-url"]) return undefined;
  const file = (name: string | undefined) =>
    name === undefined ? undefined : readFileSync(isAbsolute(name) ? name : join(dirname(path), name));
  const data = (value: string | undefined) =>
    value === undefined ? undefined : Buffer.from(value, "base64");
  const ca = data(cluster["certificate-authority-data"]) ?? file(cluster["certificate-authority"]);
  const cert = data(user["client-certificate-data"]) ?? file(user["client-certificate"]);
  const key = data(user["client-key-data"]) ?? file(user["client-key"]);
  const tokenFile = user.tokenFile;
  return {
    server: cluster.server,
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(cluster["insecure-skip-tls-verify"] ? { insecure: true } : {}),
    ...(cluster["tls-server-name"] ? { serverName: cluster["tls-server-name"] } : {}),
    ...(user.token ? { token: user.token } : {}),
    ...(tokenFile ? { tokenFile: isAbsolute(tokenFile) ? tokenFile : join(dirname(path), tokenFile) } : {}),
  };
}

/** The pod's service account, as client-go's rest.InClusterConfig reads it. */
export function inClusterCredentials(env: NodeJS.ProcessEnv, dir = SERVICE_ACCOUNT_DIR): ClusterCredentials {
  const host = env.KUBERNETES_SERVICE_HOST ?? "";
  const port = env.KUBERNETES_SERVICE_PORT ?? "443";
  return {
    server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    ca: readFileSync(join(dir, "ca.crt")),
    tokenFile: join(dir, "token"),
  };
}

/** ClusterAccess over credentials: one keep-alive agent with their TLS material, the token re-read as it rotates. */
export function clusterAccess(credentials: ClusterCredentials, now: () => number = Date.now): ClusterAccess {
  const agent = new Agent({
    keepAlive: true,
    ...(credentials.ca ? { ca: credentials.ca } : {}),
    ...(credentials.cert ? { cert: credentials.cert } : {}),
    ...(credentials.key ? { key: credentials.key } : {}),
    ...(credentials.insecure ? { rejectUnauthorized: false } : {}),
    ...(credentials.serverName ? { servername: credentials.serverName } : {}),
  });
  let token: { value: string; readAt: number } | undefined;
  const currentToken = (): string | undefined => {
    if (!credentials.tokenFile) return credentials.token;
    if (!token || now() - token.readAt > TOKEN_MAX_AGE_MS)
      token = { value: readFileSync(credentials.tokenFile, "utf8").trim(), readAt: now() };
    return token.value;
  };
  return {
    getCurrentCluster: () => ({ server: credentials.server }),
    async applyToHTTPSOptions(options) {
      if (credentials.server.startsWith("https:")) options.agent = agent;
      const bearer = currentToken();
      if (bearer) options.headers = { ...options.headers, authorization: `Bearer ${bearer}` };
    },
  };
}
