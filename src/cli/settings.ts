import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { Option } from "commander";
import { z } from "zod";
import { type OperatorConfig, operatorConfigSchema } from "../config.js";
import {
  type ClusterAccess,
  clusterAccess,
  inClusterCredentials,
  kubeconfigCredentials,
} from "../runtime/cluster-access.js";
import { UsageError } from "./io.js";

/**
 * Every setting the CLI reads, from one definition: the operator's configuration plus where the
 * cluster is. Each has a flag and an environment variable of the same name (BROKER_HOST:
 * --broker-host); a flag wins over the environment, zod validates both.
 */
export const settingsSchema = operatorConfigSchema.extend({
  KUBECONFIG: z
    .string()
    .min(1)
    .optional()
    .describe("kubeconfig file of the cluster (default: in-cluster, else ~/.kube/config)."),
});
export type SettingName = keyof typeof settingsSchema.shape;
export type Settings = z.infer<typeof settingsSchema>;

/** Every setting: what `run`, `install` and `verify` read. */
export const ALL_SETTINGS = Object.keys(settingsSchema.shape) as SettingName[];

/** Secrets come from the environment only: a flag would show them to everyone who can list processes. */
const ENVIRONMENT_ONLY: ReadonlySet<SettingName> = new Set(["BROKER_ADMIN_PASSWORD"]);

/** BROKER_HOST → broker-host. */
export function flagOf(name: SettingName): string {
  return name.toLowerCase().replaceAll("_", "-");
}

/** The key commander stores a flag's value under: broker-host → brokerHost. */
function attributeOf(name: SettingName): string {
  return flagOf(name).replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
}

function defaultText(name: SettingName): string | undefined {
  const parsed = settingsSchema.shape[name].safeParse(undefined);
  if (!parsed.success || parsed.data === undefined) return undefined;
  return Array.isArray(parsed.data) ? parsed.data.join(",") : String(parsed.data);
}

/** The flags of `names`, each documented with its environment variable and default. */
export function settingOptions(names: readonly SettingName[]): Option[] {
  return names
    .filter((name) => !ENVIRONMENT_ONLY.has(name))
    .map((name) => {
      const fallback = defaultText(name);
      const description = settingsSchema.shape[name].description ?? "";
      return new Option(
        `--${flagOf(name)} <value>`,
        `${description} [env ${name}${fallback === undefined ? "" : `, default ${fallback || '""'}`}]`,
      );
    });
}

/** Help text for the settings of `names` that have no flag. */
export function environmentOnlyHelp(names: readonly SettingName[]): string {
  return names
    .filter((name) => ENVIRONMENT_ONLY.has(name))
    .map(
      (name) =>
        `\nEnvironment only (a flag would show it in the process list):\n  ${name}  ${settingsSchema.shape[name].description}`,
    )
    .join("");
}

/**
 * The settings a command reads: each of `names` from its flag, else from the environment variable of
 * the same name, validated; the others keep their defaults. A bad value is misuse (exit 2).
 */
export function resolveSettings(
  names: readonly SettingName[],
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Settings {
  const raw = Object.fromEntries(
    names.flatMap((name) => {
      const value = (ENVIRONMENT_ONLY.has(name) ? undefined : flags[attributeOf(name)]) ?? env[name];
      return value === undefined || value === "" ? [] : [[name, value]];
    }),
  );
  const parsed = settingsSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0]) as SettingName;
    return `--${flagOf(name)} (${name}) ${JSON.stringify(raw[name])}: ${issue.message}`;
  });
  throw new UsageError(`invalid setting: ${problems.join("; ")}`);
}

/** The configuration the operator's own code takes: the settings without the CLI's. */
export function operatorConfig(settings: Settings): OperatorConfig {
  const { KUBECONFIG: _, ...config } = settings;
  return config;
}

/**
 * The cluster to talk to: the kubeconfig named by --kubeconfig/KUBECONFIG, else the pod's service
 * account, else ~/.kube/config. Without any, say so rather than fall back to an unauthenticated
 * localhost as the client library does.
 */
export async function clusterConfig(
  settings: Pick<Settings, "KUBECONFIG">,
  env: NodeJS.ProcessEnv,
): Promise<ClusterAccess> {
  const home = join(homedir(), ".kube", "config");
  if (settings.KUBECONFIG) {
    if (!existsSync(settings.KUBECONFIG))
      throw new UsageError(
        `kubeconfig ${settings.KUBECONFIG} does not exist: set KUBECONFIG or pass --kubeconfig to a file that does`,
      );
    return kubeconfigAccess(settings.KUBECONFIG);
  }
  if (env.KUBERNETES_SERVICE_HOST) return clusterAccess(inClusterCredentials(env));
  if (existsSync(home)) return kubeconfigAccess(home);
  throw new UsageError("no cluster configured: set KUBECONFIG or pass --kubeconfig");
}

async function kubeconfigAccess(path: string): Promise<ClusterAccess> {
  const credentials = kubeconfigCredentials(readFileSync(path, "utf8"), path);
  if (credentials) return clusterAccess(credentials);
  // Exec plugins, auth providers, proxies: the full client library, loaded only for them.
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  if (!kc.getCurrentCluster())
    throw new UsageError("the kubeconfig has no current context: run kubectl config use-context NAME");
  return kc;
}
