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
 * The operator's configuration: the one definition of every setting. The CLI derives a flag from each
 * (BROKER_HOST: --broker-host) and reads the environment variable of the same name (`.stack/env`
 * exports the broker part). Everything has a default that suits a cluster with the project's Helm chart.
 */
export const operatorConfigSchema = z.object({
  OPERATOR_NAMESPACE: z
    .string()
    .min(1)
    .default(OPERATOR_NAMESPACE)
    .describe("Namespace the operator runs in; device Certificates and tenant CAs live there."),
  OPERATOR_SERVICE_ACCOUNT: z
    .string()
    .min(1)
    .default("iot-tenant-operator")
    .describe("Identity the operator runs as; its own writes are exempt from the admission policy."),
  ROOT_CA_SECRET: z.string().min(1).default("iot-root-ca").describe(
    // No cert-manager issuer holds it, so nothing outside the operator's namespace can have it sign anything.
    "Secret in the operator's namespace with the device root CA (tls.crt, tls.key) that signs every tenant's CA; the broker trusts it.",
  ),
  BROKER_NAMESPACE: z
    .string()
    .min(1)
    .default(OPERATOR_NAMESPACE)
    .describe("Where the MQTT broker's pods run, for the tenant egress policy."),
  BROKER_POD_PORTS: portList.default([8883]).describe("Broker pod ports tenants may reach, comma-separated."),
  DNS_NAMESPACE: z.string().min(1).default("kube-system").describe("Namespace of the cluster DNS pods."),
  DNS_POD_LABEL: z
    .string()
    .regex(/^[^=]+=[^=]+$/, "must be key=value")
    .default("k8s-app=kube-dns")
    .describe("Label (key=value) of the cluster DNS pods."),
  BROKER_KIND: z
    .enum(["mosquitto", "nats"])
    .default("mosquitto")
    .describe(
      "Which broker the operator drives: mosquitto (one broker, dynamic security, up to about 10,000 devices) or nats (a NATS cluster in operator mode: tenants are accounts, logins go through the operator's auth callout). The NATS_* settings apply to nats only.",
    ),
  NATS_URLS: nameList
    .default([])
    .describe(
      "Client URLs of the NATS servers, comma-separated, e.g. nats://nats-0:4222,nats://nats-1:4222.",
    ),
  NATS_CLUSTER_SIZE: z.coerce
    .number()
    .int()
    .min(1)
    .default(3)
    .describe("Servers that must confirm an account update before the operator calls it applied."),
  NATS_KEYS_SECRET: z
    .string()
    .min(1)
    .default("iot-nats-keys")
    .describe(
      "Secret in the operator's namespace with the NATS nkey seeds operator, systemAccount, systemUser, authAccount, calloutUser, calloutXkey (a curve seed: authorization requests are sealed to it); tenants' account keys go into Secrets nats-account-<tenant> beside it.",
    ),
  NATS_USER_LIFETIME_SECONDS: z.coerce
    .number()
    .int()
    .min(60)
    .default(86_400)
    .describe(
      "Lifetime of the user a login gets; the server drops the connection then and the device logs in again.",
    ),
  NATS_SUBSCRIPTIONS_PER_DEVICE: z.coerce
    .number()
    .int()
    .min(1)
    .default(20)
    .describe("Subscriptions per device of a tenant's maxDevices (an MQTT a/# costs two)."),
  NATS_JETSTREAM_BYTES_PER_DEVICE: z.coerce
    .number()
    .int()
    .min(0)
    .default(1 << 20)
    .describe(
      "JetStream bytes per device of a tenant's maxDevices, for sessions, retained and QoS 1/2 messages.",
    ),
  NATS_MAX_PAYLOAD_BYTES: z.coerce
    .number()
    .int()
    .min(1)
    .default(256 * 1024)
    .describe("Largest MQTT message a device may publish, in bytes."),
  BROKER_HOST: z.string().min(1).default("127.0.0.1").describe("Host name of the MQTT broker."),
  BROKER_MTLS_PORT: port.default(8883).describe("The broker's device listener (mTLS or password over TLS)."),
  BROKER_ADMIN_PORT: port.default(1883).describe("The broker's mTLS-only admin listener."),
  BROKER_ADMIN_USERNAME: z
    .string()
    .min(1)
    .default("operator-admin")
    .describe("CN of the admin certificate: the broker's dynsec admin client, which has no password."),
  BROKER_ADMIN_CERT_FILE: z
    .string()
    .min(1)
    .optional()
    .describe("The admin's client certificate for the broker's admin listener."),
  BROKER_ADMIN_KEY_FILE: z.string().min(1).optional().describe("The admin's private key."),
  BROKER_ADMIN_PASSWORD: z
    .string()
    .min(1)
    .optional()
    .describe("Passphrase of BROKER_ADMIN_KEY_FILE when the key is encrypted (the local stack's is)."),
  BROKER_CA_FILE: z
    .string()
    .min(1)
    .optional()
    .describe("CA bundle that verifies the broker's server certificate."),
  BROKER_CRL_FILE: z
    .string()
    .min(1)
    .optional()
    .describe(
      "For a broker on this host: the operator writes the combined CRL here and SIGHUPs the PID in BROKER_PID_FILE.",
    ),
  BROKER_PID_FILE: z.string().min(1).optional().describe("PID file of a broker on this host."),
  BROKER_CRL_INCLUDE_FILE: z
    .string()
    .min(1)
    .optional()
    .describe(
      "CRLs of other issuers the broker checks (e.g. the root CA's), prepended to the tenants' CRLs.",
    ),
  TENANT_PRIORITY_CLASSES: nameList
    .default([])
    .describe(
      "Priority classes pods in tenant namespaces may use, comma-separated (none: the default only).",
    ),
  TENANT_SERVICE_TYPES: nameList
    .pipe(z.array(z.enum(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])))
    .default(["ClusterIP"])
    .describe(
      // ExternalName and NodePort/LoadBalancer reach past NetworkPolicies.
      "Service types tenants may create, comma-separated.",
    ),
  TENANT_INGRESS_DOMAIN: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, "must be a DNS name")
    .optional()
    .describe(
      // So that no tenant can take over another's host.
      "Ingress hosts of a tenant namespace must lie under <namespace>.<this domain>; unset: tenants cannot create Ingresses.",
    ),
  AUDIT_LOG_FILE: z
    .string()
    .min(1)
    .default("/var/log/iot-tenant-operator/audit.log")
    .describe(
      "The audit trail: JSON lines a log collector tails, chained across restarts through the Secret AUDIT_SECRET.",
    ),
  AUDIT_SECRET: z
    .string()
    .min(1)
    .default("iot-tenant-operator-audit")
    .describe("Secret in the operator's namespace with the audit signing key (Ed25519) and the chain head."),
  PROBE_BIND_ADDRESS: z
    .string()
    .default("127.0.0.1:8081")
    .describe("Address of the health and metrics server."),
  LEASE_DURATION_SECONDS: seconds.default(15).describe("Leader election: how long a lease lasts."),
  LEASE_RENEW_DEADLINE_SECONDS: seconds
    .default(10)
    .describe("Leader election: how long the leader tries to renew."),
  LEASE_RETRY_PERIOD_SECONDS: seconds.default(2).describe("Leader election: how often candidates retry."),
  LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error"]).default("info").describe("Log level."),
});
export type OperatorConfig = z.infer<typeof operatorConfigSchema>;
