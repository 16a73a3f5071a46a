import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { tenantCAName } from "./api/derived-names.js";
import { SecurityMonitor } from "./audit/security-monitor.js";
import { AuditTrail } from "./audit/trail.js";
import type { BrokerAdapter } from "./broker/adapter.js";
import type { DynsecConnection } from "./broker/dynsec-client.js";
import { MosquittoDynsecAdapter } from "./broker/mosquitto-dynsec.js";
import { NatsAccountsAdapter } from "./broker/nats-accounts.js";
import { bootstrapKeys, tenantLimits } from "./broker/nats-claims.js";
import type { TenantTrust } from "./broker/nats-login.js";
import type { OperatorConfig } from "./config.js";
import { DeviceReconciler } from "./controllers/device.js";
import { readBootstrapSeeds, SecretAccountKeyStore } from "./controllers/nats-keys.js";
import { parseTenantObject } from "./controllers/parse.js";
import { Resource } from "./controllers/resources.js";
import { MANAGED_SECRETS, RevocationReconciler } from "./controllers/revocation.js";
import { type Secret, secretText } from "./controllers/secrets.js";
import { TenantReconciler } from "./controllers/tenant.js";
import { parseRevocations, REVOKED_KEY, tenantCrlName } from "./desired/revocation.js";
import type { Logger } from "./observability/logger.js";
import type { ClusterAccess } from "./runtime/cluster-access.js";
import { objectKey } from "./runtime/kube-object.js";
import { Manager, type ManagerOptions } from "./runtime/manager.js";

export interface OperatorOptions {
  readonly kubeConfig: ClusterAccess;
  readonly config: OperatorConfig;
  readonly logger: Logger;
  readonly identity?: string;
  /** Defaults to the configured lease; tests may turn it off. */
  readonly leaderElection?: ManagerOptions["leaderElection"] | false;
  readonly informerDefaults?: ManagerOptions["informerDefaults"];
  readonly brokerResyncIntervalMs?: number;
  /** Mosquitto's pacing (see MosquittoDynsecOptions.pacing); tests make a slow broker with it. */
  readonly brokerPacing?: number;
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

/**
 * What the NATS auth callout checks device certificates against, from the operator's own Secrets:
 * the tenant's CA (`tenant-<t>-ca`) and the serials its CRL Secret lists.
 */
function tenantTrustFromSecrets(
  manager: Manager,
  namespace: string,
): (tenant: string) => TenantTrust | undefined {
  const secrets = manager.informer<Secret>(Resource.secret, { labelSelector: MANAGED_SECRETS });
  // Asked at every certificate login: the CRL's JSON (up to maxDevices + 100 entries) is parsed
  // again only when either Secret changed.
  const parsed = new Map<string, { readonly versions: string; readonly trust: TenantTrust }>();
  return (tenant) => {
    const ca = secrets.get(objectKey({ namespace, name: tenantCAName(tenant) }));
    const caCertificatePem = secretText(ca, "tls.crt");
    if (!caCertificatePem) {
      parsed.delete(tenant);
      return undefined;
    }
    const crl = secrets.get(objectKey({ namespace, name: tenantCrlName(tenant) }));
    const versions = `${ca?.metadata.resourceVersion}/${crl?.metadata.resourceVersion}`;
    const known = parsed.get(tenant);
    if (known?.versions === versions) return known.trust;
    const revoked = parseRevocations(secretText(crl, REVOKED_KEY) ?? "[]");
    const trust = { caCertificatePem, revokedSerials: new Set(revoked.map((r) => r.serialNumber)) };
    parsed.set(tenant, { versions, trust });
    return trust;
  };
}

/** The backend BROKER_KIND names, behind the one adapter interface. */
async function brokerAdapter(options: OperatorOptions, manager: Manager): Promise<BrokerAdapter> {
  const { config } = options;
  const logger = options.logger.child({ component: "broker" });
  if (config.BROKER_KIND === "mosquitto")
    return new MosquittoDynsecAdapter({
      connection: brokerAdminConnection(config),
      logger,
      onCommand: (event) => manager.metrics.brokerCommand(event),
      onCutOff: (event) => manager.metrics.brokerCutOff(event),
      ...(options.brokerResyncIntervalMs ? { resyncIntervalMs: options.brokerResyncIntervalMs } : {}),
      ...(options.brokerPacing !== undefined ? { pacing: options.brokerPacing } : {}),
    });
  if (config.NATS_URLS.length === 0) throw new Error("NATS_URLS is required with BROKER_KIND=nats");
  const seeds = await readBootstrapSeeds(manager.client, config.OPERATOR_NAMESPACE, config.NATS_KEYS_SECRET);
  const tenants = manager.informer(Resource.tenant);
  const perDevice = {
    subscriptions: config.NATS_SUBSCRIPTIONS_PER_DEVICE,
    jetStreamBytes: config.NATS_JETSTREAM_BYTES_PER_DEVICE,
    payloadBytes: config.NATS_MAX_PAYLOAD_BYTES,
  };
  return new NatsAccountsAdapter({
    servers: config.NATS_URLS,
    clusterSize: config.NATS_CLUSTER_SIZE,
    keys: bootstrapKeys(seeds),
    accountKeys: new SecretAccountKeyStore(manager.client, config.OPERATOR_NAMESPACE),
    tenantLimits: (tenant) => {
      const object = tenants.get(tenant);
      // A device is applied only once its tenant is cached; a tenant gone meanwhile gets no connections.
      return tenantLimits(object ? parseTenantObject(object).spec.devices.maxDevices : 0, perDevice);
    },
    tenantTrust: tenantTrustFromSecrets(manager, config.OPERATOR_NAMESPACE),
    tenantExists: (tenant) => tenants.get(tenant) !== undefined,
    userLifetimeSeconds: config.NATS_USER_LIFETIME_SECONDS,
    logger,
  });
}

/** How long start-up waits for the broker's first answer before the reconcilers start anyway. */
const FIRST_BROKER_STATUS_WAIT_MS = 5_000;

/** Wires the broker adapter, the Device and Tenant reconcilers and the manager, and starts them. */
export async function startOperator(options: OperatorOptions): Promise<RunningOperator> {
  const { config, logger } = options;
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
  const broker = await brokerAdapter(options, manager);
  new RevocationReconciler(
    manager,
    config,
    broker instanceof NatsAccountsAdapter
      ? (tenant, serials) => broker.certificatesRevoked(tenant, serials)
      : undefined,
  ).register();
  broker.onStatusChange((status) => manager.metrics.brokerSynced.set(status.synced ? 1 : 0));
  const devices = new DeviceReconciler(manager, config, broker);
  devices.register();
  new TenantReconciler(manager, config, devices, broker).register();
  const security = new SecurityMonitor(
    manager,
    new AuditTrail({
      client: manager.client,
      namespace: config.OPERATOR_NAMESPACE,
      secretName: config.AUDIT_SECRET,
      file: config.AUDIT_LOG_FILE,
      clock: manager.clock,
      logger: logger.child({ component: "audit" }),
    }),
    config.BROKER_KIND === "mosquitto" ? brokerAdminConnection(config) : undefined,
    config.OPERATOR_NAMESPACE,
  );
  security.register();
  manager.addLeaderRunnable((signal) => security.run(signal));

  // Reconcilers that start before the broker answered would report it unreachable, then reachable:
  // two status writes per tenant on every restart. Bounded: a broker that cannot answer yet (the
  // chart's starts once the operator has written the first CRL) must not keep the operator from
  // starting, nor its replicas from getting Ready.
  await Promise.race([broker.firstStatus(), sleep(FIRST_BROKER_STATUS_WAIT_MS)]);
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
