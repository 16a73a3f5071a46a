import { readdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import type { OperatorConfig } from "./config.js";
import { resourceOf } from "./controllers/resources.js";
import { clusterObjects } from "./desired/cluster.js";
import type { ApplyIntent, KubeClient } from "./runtime/kube-client.js";

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The cluster-wide pieces the operator needs and does not create at run time (so its own RBAC
 * stays small): the CRDs, its namespace, the tenant-admin ClusterRole and the admission policy.
 */
export async function installObjects(config: OperatorConfig): Promise<ApplyIntent[]> {
  const crdDir = join(packageRoot, "crds");
  const files = (await readdir(crdDir)).filter((f) => f.endsWith(".yaml")).sort();
  const crds = await Promise.all(
    files.map(async (f) =>
      parseAllDocuments(await readFile(join(crdDir, f), "utf8")).map((d) => d.toJS() as ApplyIntent),
    ),
  );
  return [
    ...crds.flat(),
    { apiVersion: "v1", kind: "Namespace", metadata: { name: config.OPERATOR_NAMESPACE } },
    ...clusterObjects(config),
  ];
}

export async function install(
  client: KubeClient,
  config: OperatorConfig,
  onApplied?: (object: ApplyIntent) => void,
): Promise<void> {
  for (const object of await installObjects(config)) {
    await client.apply(resourceOf(object), object);
    onApplied?.(object);
  }
}
