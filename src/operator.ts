import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import type { BrokerAdapter } from "./broker/adapter.js";
import type { DynsecConnection } from "./broker/dynsec-client.js";
import { MosquittoDynsecAdapter } from "./broker/mosquitto-dynsec.js";
import type { OperatorConfig } from "./config.js";
import { DeviceReconciler } from "./controllers/device.js";
import { RevocationReconciler } from "./controllers/revocation.js";
import { TenantReconciler } from "./controllers/tenant.js";
import type { Logger } from "./observability/logger.js";
import { Manager, type ManagerOptions } from "./runtime/manager.js";

export interface OperatorOptions {
  readonly kubeConfig: KubeConfig;
  readonly config: OperatorConfig;
  readonly logger: Logger;
  readonly identity?: string;
  /** Defaults to the configured lease; tests may turn it off. */
  readonly leaderElection?: ManagerOptions["leaderElection"] | false;
  readonly informerDefaults?: ManagerOptions["informerDefaults"];
  readonly brokerResyncIntervalMs?: number;
}

export interface RunningOperator {
  readonly manager: Manager;
  readonly broker: BrokerAdapter;
  /** Settles when the operator has stopped (rejects when leadership was lost). */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

function probeAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(":");
  return { host: address.slice(0, colon) || "127.0.0.1", port: Number(address.slice(colon + 1)) };
}

/** The broker admin connection from the configuration; the admin logs in with its certificate only. */
export function brokerAdminConnection(config: OperatorConfig): DynsecConnection {
  const { BROKER_CA_FILE: caFile, BROKER_ADMIN_CERT_FILE: certFile, BROKER_ADMIN_KEY_FILE: keyFile } = config;
  if (!caFile || !certFile || !keyFile)
    throw new Error("BROKER_CA_FILE, BROKER_ADMIN_CERT_FILE and BROKER_ADMIN_KEY_FILE are required");
  return {
    host: config.BROKER_HOST,
    port: config.BROKER_ADMIN_PORT,
    caFile,
    certFile,
    keyFile,
    ...(config.BROKER_ADMIN_PASSWORD ? { passphrase: config.BROKER_ADMIN_PASSWORD } : {}),
  };
}

/** Wires the broker adapter, the Device and Tenant reconcilers and the manager, and starts them. */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { config, logger } = options;
  const connection = brokerAdminConnection(config);
  const identity = options.identity ?? `${hostname()}-${process.pid}`;
  const manager = new Manager({
    kubeConfig: options.kubeConfig,
    identity,
    logger,
    probes: probeAddress(config.PROBE_BIND_ADDRESS),
    ...(options.informerDefaults ? { informerDefaults: options.informerDefaults } : {}),
    ...(options.leaderElection === false
      ? {}
      : {
          leaderElection: options.leaderElection ?? {
            namespace: config.OPERATOR_NAMESPACE,
            name: "iot-tenant-operator",
            leaseDurationMs: config.LEASE_DURATION_SECONDS * 1000,
            renewDeadlineMs: config.LEASE_RENEW_DEADLINE_SECONDS * 1000,
            retryPeriodMs: config.LEASE_RETRY_PERIOD_SECONDS * 1000,
          },
        }),
  });
  const broker = new MosquittoDynsecAdapter({
    connection,
    logger: logger.child({ component: "broker" }),
    onCommand: (event) => manager.metrics.brokerCommand(event),
    ...(options.brokerResyncIntervalMs ? { resyncIntervalMs: options.brokerResyncIntervalMs } : {}),
  });
  new RevocationReconciler(manager, config).register();
  broker.onStatusChange((status) => manager.metrics.brokerSynced.set(status.synced ? 1 : 0));
  const devices = new DeviceReconciler(manager, config, broker);
  devices.register();
  new TenantReconciler(manager, config, devices, broker).register();

  // Reconcilers that start before the broker answered would report it unreachable, then reachable:
  // two status writes per tenant on every restart.
  await broker.firstStatus();
  const done = manager.run().finally(() => broker.close());
  void resyncBrokerWhenLeading(manager, devices, logger, done);
  return {
    manager,
    broker,
    done,
    async stop() {
      await manager.stop();
      await done.catch(() => undefined);
    },
  };
}

/**
 * Once this replica leads and its caches are synced, hand the broker the complete desired set so
 * it deletes orphans left by a crash between two commands or by Devices deleted meanwhile; the
 * adapter recomputes it from the caches at every periodic resync and reconnect.
 */
async function resyncBrokerWhenLeading(
  manager: Manager,
  devices: DeviceReconciler,
  logger: Logger,
  done: Promise<void>,
): Promise<void> {
  let stopped = false;
  done.finally(() => {
    stopped = true;
  });
  while (!stopped && !manager.isLeader) await new Promise((r) => setTimeout(r, 200));
  if (stopped) return;
  try {
    const report = await devices.resyncBroker();
    logger.info({ ...report }, "broker resynced");
  } catch (error) {
    logger.warn({ err: error }, "broker resync failed; the adapter retries on reconnect");
  }
}
