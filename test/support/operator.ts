import { inject } from "vitest";
import { type OperatorConfig, operatorConfigSchema } from "../../src/config.js";
import { install } from "../../src/install.js";
import { createLogger } from "../../src/observability/logger.js";
import { type RunningOperator, startOperator } from "../../src/operator.js";
import { KubeClient } from "../../src/runtime/kube-client.js";
import { adminKubeConfig } from "./kube.js";

/** The operator's configuration for the test stack. */
export function stackOperatorConfig(overrides: Record<string, string> = {}): OperatorConfig {
  const { broker, rootIssuer } = inject("stack");
  return operatorConfigSchema.parse({
    BROKER_HOST: broker.host,
    BROKER_MTLS_PORT: String(broker.mtlsPort),
    BROKER_ADMIN_PORT: String(broker.adminPort),
    BROKER_ADMIN_USERNAME: broker.adminUsername,
    BROKER_ADMIN_PASSWORD: broker.adminPassword,
    BROKER_CA_FILE: broker.caFile,
    ROOT_ISSUER_NAME: rootIssuer,
    PROBE_BIND_ADDRESS: "127.0.0.1:0",
    LOG_LEVEL: process.env.OPERATOR_LOG_LEVEL ?? "warn",
    ...overrides,
  });
}

/** Installs the CRDs and cluster objects, then runs the real operator in this process against the stack. */
export async function startTestOperator(
  config: OperatorConfig = stackOperatorConfig(),
): Promise<RunningOperator> {
  const kubeConfig = adminKubeConfig();
  await install(new KubeClient(kubeConfig), config);
  return startOperator({
    kubeConfig,
    config,
    logger: createLogger({ level: config.LOG_LEVEL }),
    leaderElection: false,
    informerDefaults: { retryInitialMs: 100, retryMaxMs: 2_000 },
  });
}
