import { z } from "zod";
import { OPERATOR_NAMESPACE } from "./api/group.js";

const port = z.coerce.number().int().min(1).max(65535);
/** A comma-separated list of ports, e.g. "8883,443". */
const portList = z
  .string()
  .transform((text) => text.split(",").map((p) => Number(p.trim())))
  .pipe(z.array(z.int().min(1).max(65535)).min(1));
const seconds = z.coerce.number().positive();
/** A comma-separated list of names, e.g. "ClusterIP,NodePort"; empty means none. */
const nameList = z.string().transform((text) =>
  text
    .split(",")
    .map((n) => n.trim())
    .filter(Boolean),
);

/**
 * The operator's configuration, read from the environment (`.stack/env` exports the broker part).
 * Everything has a default that suits a cluster with the project's Helm chart installed.
 */
export const operatorConfigSchema = z.object({
  OPERATOR_NAMESPACE: z.string().min(1).default(OPERATOR_NAMESPACE),
  /** Identity the operator runs as; its own writes are exempt from the admission policy. */
  OPERATOR_SERVICE_ACCOUNT: z.string().min(1).default("iot-tenant-operator"),
  /**
   * Secret in the operator's namespace holding the device root CA (`tls.crt`, `tls.key`). The operator
   * signs every tenant's intermediate CA with it; it is no cert-manager issuer, so nothing outside
   * this namespace can have it sign anything. The broker trusts its certificate.
   */
  ROOT_CA_SECRET: z.string().min(1).default("iot-root-ca"),
  /** Where the MQTT broker's pods run, for the tenant egress policy. */
  BROKER_NAMESPACE: z.string().min(1).default(OPERATOR_NAMESPACE),
  BROKER_POD_PORTS: portList.default([8883]),
  DNS_NAMESPACE: z.string().min(1).default("kube-system"),
  DNS_POD_LABEL: z
    .string()
    .regex(/^[^=]+=[^=]+$/, "must be key=value")
    .default("k8s-app=kube-dns"),
  /**
   * Which broker the operator drives: `mosquitto` (one broker, dynamic security, up to about 10,000
   * devices) or `nats` (a NATS cluster in operator mode; tenants are accounts, logins go through the
   * operator's auth callout). The NATS_* settings below apply to `nats` only.
   */
  BROKER_KIND: z.enum(["mosquitto", "nats"]).default("mosquitto"),
  /** Client URLs of the NATS servers, comma-separated, e.g. nats://nats-0:4222,nats://nats-1:4222. */
  NATS_URLS: nameList.default([]),
  /** Servers that must confirm an account update before the operator calls it applied. */
  NATS_CLUSTER_SIZE: z.coerce.number().int().min(1).default(3),
  /**
   * Secret in the operator's namespace holding the deployment's NATS keys: operator, systemAccount,
   * systemUser, authAccount, calloutUser (nkey seeds). Tenants' account keys go into Secrets
   * `nats-account-<tenant>` beside it.
   */
  NATS_KEYS_SECRET: z.string().min(1).default("iot-nats-keys"),
  /** Lifetime of the user a login gets; the server drops the connection then and the device logs in again. */
  NATS_USER_LIFETIME_SECONDS: z.coerce.number().int().min(60).default(86_400),
  /** Per device of a tenant's maxDevices: subscriptions (an MQTT `a/#` costs two). */
  NATS_SUBSCRIPTIONS_PER_DEVICE: z.coerce.number().int().min(1).default(20),
  /** Per device of a tenant's maxDevices: JetStream bytes for sessions, retained and QoS 1/2 messages. */
  NATS_JETSTREAM_BYTES_PER_DEVICE: z.coerce
    .number()
    .int()
    .min(0)
    .default(1 << 20),
  /** Largest MQTT message a device may publish, in bytes. */
  NATS_MAX_PAYLOAD_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .default(256 * 1024),
  BROKER_HOST: z.string().min(1).default("127.0.0.1"),
  BROKER_MTLS_PORT: port.default(8883),
  BROKER_ADMIN_PORT: port.default(1883),
  /** CN of the admin certificate: the broker's dynsec admin client, which has no password. */
  BROKER_ADMIN_USERNAME: z.string().min(1).default("operator-admin"),
  /** The admin's client certificate and key for the broker's mTLS-only admin listener. */
  BROKER_ADMIN_CERT_FILE: z.string().min(1).optional(),
  BROKER_ADMIN_KEY_FILE: z.string().min(1).optional(),
  /** Passphrase of BROKER_ADMIN_KEY_FILE when the key is encrypted (the local stack's is). */
  BROKER_ADMIN_PASSWORD: z.string().min(1).optional(),
  /** Verifies the broker's server certificate. */
  BROKER_CA_FILE: z.string().min(1).optional(),
  /** A broker on this host: the operator writes the combined CRL here and SIGHUPs the PID in BROKER_PID_FILE. */
  BROKER_CRL_FILE: z.string().min(1).optional(),
  BROKER_PID_FILE: z.string().min(1).optional(),
  /** CRLs of other issuers the broker checks (e.g. the root CA's), prepended to the tenants' CRLs. */
  BROKER_CRL_INCLUDE_FILE: z.string().min(1).optional(),
  /** Priority classes pods in tenant namespaces may use (none: only the cluster's default priority). */
  TENANT_PRIORITY_CLASSES: nameList.default([]),
  /** Service types tenants may create; ExternalName and NodePort/LoadBalancer reach past NetworkPolicies. */
  TENANT_SERVICE_TYPES: nameList
    .pipe(z.array(z.enum(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])))
    .default(["ClusterIP"]),
  /**
   * Ingress hosts of a tenant namespace must lie under `<namespace>.<this domain>`, so no tenant can
   * take over another's host. Unset: tenants cannot create Ingresses.
   */
  TENANT_INGRESS_DOMAIN: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a DNS name")
    .optional(),
  /**
   * The audit trail: JSON lines a log collector tails (the chart mounts an emptyDir here and a sidecar
   * streams it to its own stdout), chained across restarts through the Secret AUDIT_SECRET.
   */
  AUDIT_LOG_FILE: z.string().min(1).default("/var/log/iot-tenant-operator/audit.log"),
  /** Secret in the operator's namespace with the audit signing key (Ed25519) and the chain head. */
  AUDIT_SECRET: z.string().min(1).default("iot-tenant-operator-audit"),
  PROBE_BIND_ADDRESS: z.string().default("127.0.0.1:8081"),
  LEASE_DURATION_SECONDS: seconds.default(15),
  LEASE_RENEW_DEADLINE_SECONDS: seconds.default(10),
  LEASE_RETRY_PERIOD_SECONDS: seconds.default(2),
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error"]).default("info"),
});
export type OperatorConfig = z.infer<typeof operatorConfigSchema>;

export function loadConfig(env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const parsed = operatorConfigSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new Error(`invalid operator configuration: ${problems}`);
  }
  return parsed.data;
}
