import { readFile } from "node:fs/promises";
import { KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments, stringify } from "yaml";
import { parseTenant } from "../api/tenant.js";
import { AUDIT_VERIFY_USAGE, auditVerifyCommand } from "../audit/verify-file.js";
import { loadConfig, type OperatorConfig } from "../config.js";
import { desiredTenant } from "../desired/tenant.js";
import { install } from "../install.js";
import { createLogger } from "../observability/logger.js";
import { brokerAdminConnection, startOperator } from "../operator.js";
import { KubeClient } from "../runtime/kube-client.js";
import { PROBE_LABEL } from "../verify/broker-checks.js";
import { formatChecks, verifyIsolation } from "../verify/isolation.js";

const USAGE = `usage: iot-tenant-operator <command>

  run                  start the operator against KUBECONFIG (broker settings from the environment)
  install              apply the CRDs, the operator namespace, the tenant-admin ClusterRole and the admission policy
  render FILE...       print what the Tenants in FILE(s) become, without a cluster
  verify [--json] [TENANT...]
                       check on the live cluster and broker that no tenant can reach another (exit 1 if one
                       can); a table, or the checks as JSON; SKIP marks a check that could not run, and why;
                       the broker is probed with Devices labelled ${PROBE_LABEL}=true
  ${AUDIT_VERIFY_USAGE}
                       check an audit file: OK (exit 0) or the first removed, reordered or edited record (exit 1)`;

export async function main(args: readonly string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "run":
        return await run(loadConfig());
      case "install":
        await installCommand(loadConfig());
        return 0;
      case "verify":
        return await verify(loadConfig(), rest);
      case "audit":
        return await auditVerifyCommand(rest, (text) => process.stdout.write(`${text}\n`));
      case "render":
        process.stdout.write(await render(loadConfig(), rest));
        return 0;
      default:
        process.stderr.write(`${USAGE}\n`);
        return command === undefined || command === "help" ? 0 : 2;
    }
  } catch (error) {
    process.stderr.write(
      `iot-tenant-operator ${command}: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    return 1;
  }
}

function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

async function run(config: OperatorConfig): Promise<number> {
  const operator = await startOperator({
    kubeConfig: kubeConfig(),
    config,
    logger: createLogger({ level: config.LOG_LEVEL }),
  });
  operator.manager.stopOnSignals();
  await operator.done;
  return 0;
}

async function installCommand(config: OperatorConfig): Promise<void> {
  await install(new KubeClient(kubeConfig()), config, (object) =>
    process.stdout.write(`applied ${object.kind} ${object.metadata.name}\n`),
  );
}

async function verify(config: OperatorConfig, args: readonly string[]): Promise<number> {
  const tenants = args.filter((a) => a !== "--json");
  const checks = await verifyIsolation(new KubeClient(kubeConfig()), {
    config,
    broker: {
      host: config.BROKER_HOST,
      mtlsPort: config.BROKER_MTLS_PORT,
      adminUsername: config.BROKER_ADMIN_USERNAME,
      // Without the admin's certificate the checks that need the admin API report SKIP.
      ...(config.BROKER_ADMIN_CERT_FILE ? { admin: brokerAdminConnection(config) } : {}),
    },
    ...(tenants.length ? { tenants } : {}),
  });
  process.stdout.write(
    args.includes("--json") ? `${JSON.stringify(checks, null, 2)}\n` : `${formatChecks(checks)}\n`,
  );
  return checks.some((c) => c.result === "FAIL") ? 1 : 0;
}

async function render(config: OperatorConfig, files: readonly string[]): Promise<string> {
  if (!files.length) throw new Error("name at least one file with Tenant manifests");
  const documents = (
    await Promise.all(files.map(async (f) => parseAllDocuments(await readFile(f, "utf8"))))
  ).flat();
  const tenants = documents.map((d) => d.toJS()).filter((o) => o?.kind === "Tenant");
  if (!tenants.length) throw new Error(`no Tenant in ${files.join(", ")}`);
  return tenants
    .flatMap((manifest) => {
      const tenant = parseTenant(manifest);
      // The API server assigns the uid; rendering shows where it goes.
      const desired = desiredTenant(
        { ...tenant, metadata: { ...tenant.metadata, uid: "<uid of the Tenant>" } },
        config,
      );
      return [...desired.namespaces, ...desired.namespaced, ...desired.pki];
    })
    .map((object) => `---\n${stringify(object)}`)
    .join("");
}
