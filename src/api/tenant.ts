import { z } from "zod";
import {
  conditionsSchema,
  dnsLabelSchema,
  goDurationSchema,
  isCidr,
  MIN_CERTIFICATE_DURATION,
  MIN_CERTIFICATE_RENEW_BEFORE,
  mapList,
  objectNameRules,
  observedGenerationSchema,
  quantitySchema,
  RENEW_BEFORE_BOUND_MESSAGE,
  renewBeforeAtMostHalfDuration,
  renewsAtMostHalfway,
  setList,
  tenantNamespaceSchema,
} from "./fields.js";
import { API_VERSION, DNS_LABEL_MAX_LENGTH } from "./group.js";
import { kube } from "./openapi.js";
import {
  ageColumn,
  objectMetaSchema,
  type ResourceDefinition,
  readyColumn,
  reasonColumn,
} from "./resource.js";
import { DEFAULT_TOPIC_ROOT_PREFIX, TOPIC_ROOT_MAX_LENGTH, topicRootSchema } from "./topics.js";

export const TENANT_MAX_NAMESPACES = 16;
/** Security event kinds a Tenant's devicePolicy can quarantine a device on (see src/desired/quarantine.ts). */
export const QUARANTINE_TRIGGERS = ["TamperReported"] as const;
const QUOTA_MAX_RESOURCES = 32;

const adminSchema = kube(
  z
    .object({
      kind: z
        .enum(["User", "Group", "ServiceAccount"])
        .describe("Kind of subject: User, Group or ServiceAccount."),
      name: z
        .string()
        .min(1)
        .max(253)
        .describe(
          "Name of the user, group or service account as the API server authenticates it, " +
            "e.g. alice@example.com (User), acme-admins (Group) or ci (ServiceAccount, with namespace).",
        ),
      namespace: dnsLabelSchema(
        "Namespace of the ServiceAccount; required for ServiceAccount, forbidden otherwise.",
      ).optional(),
    })
    .refine((admin) => (admin.kind === "ServiceAccount") === (admin.namespace !== undefined), {
      message: "namespace is required for kind ServiceAccount and forbidden for User and Group",
      path: ["namespace"],
    })
    .describe(
      "A subject that becomes tenant admin in each of the tenant's namespaces, e.g. " +
        "{kind: Group, name: acme-admins} or {kind: ServiceAccount, name: ci, namespace: acme-ci}.",
    ),
  {
    validations: [
      {
        rule: "(self.kind == 'ServiceAccount') == has(self.__namespace__)",
        message: "namespace is required for kind ServiceAccount and forbidden for User and Group",
        fieldPath: ".namespace",
      },
    ],
  },
);

const portSchema = z
  .object({
    port: z.int().min(1).max(65535).describe("Port number, 1 to 65535, e.g. 443."),
    protocol: z.enum(["TCP", "UDP", "SCTP"]).default("TCP").describe("Protocol: TCP (default), UDP or SCTP."),
  })
  .describe("A destination port, e.g. {port: 443} or {port: 5683, protocol: UDP}.");

const cidrSchema = kube(
  z
    .string()
    .max(43)
    .refine(isCidr, { message: "must be an IPv4 or IPv6 prefix in CIDR notation, e.g. 10.20.0.0/16" })
    .describe("An IPv4 or IPv6 prefix in CIDR notation, e.g. 10.20.0.0/16, 203.0.113.7/32 or 2001:db8::/32."),
  {
    validations: [
      { rule: "isCIDR(self)", message: "must be an IPv4 or IPv6 prefix in CIDR notation, e.g. 10.20.0.0/16" },
    ],
  },
);

const networkSchema = z
  .object({
    allowFromNamespaces: setList(z.array(dnsLabelSchema("A namespace name.")).max(32))
      .optional()
      .describe(
        "Namespaces outside the tenant whose pods may connect to the tenant's pods, e.g. an ingress controller " +
          "or monitoring, e.g. [ingress-nginx, monitoring]. A namespace of another tenant is refused " +
          "(condition reason NamespaceOfOtherTenant).",
      ),
    allowEgressCIDRs: setList(z.array(cidrSchema).max(32))
      .optional()
      .describe(
        "IP ranges outside the cluster that the tenant's pods may connect to, on egressPorts, in CIDR notation, " +
          "e.g. [10.20.0.0/16, 2001:db8::/32]; a single address is a /32 (IPv4) or /128 (IPv6).",
      ),
    egressPorts: mapList(z.array(portSchema).max(16), ["port", "protocol"])
      .optional()
      .describe(
        "Ports that allowEgressCIDRs opens, e.g. [{port: 443}, {port: 5432, protocol: TCP}]; " +
          "when empty, all ports of those ranges.",
      ),
  })
  .describe(
    "Network isolation of the tenant's namespaces. By default pods may talk only to pods of the same tenant, " +
      "to cluster DNS and to the MQTT broker; these lists open more, never less.",
  );

const devicesSchema = z
  .object({
    maxDevices: z
      .int()
      .min(0)
      .max(100_000)
      .default(100)
      .describe(
        "Most Devices the tenant may have across its namespaces; 0 allows none. Default 100. It also sizes the tenant's revocation list: once it holds maxDevices + 100 unexpired revocations, new Devices wait for a certificate until entries expire (all tenants' lists share one 1 MiB Secret).",
      ),
    certificate: kube(
      z
        .object({
          duration: goDurationSchema(
            "Lifetime of device certificates, a Go duration of hours, minutes and seconds (h, m, s; no days), " +
              "e.g. 2160h (90 days, the default), 8760h (a year) or 36h30m. " +
              `At least ${MIN_CERTIFICATE_DURATION}, so renewals never churn.`,
            MIN_CERTIFICATE_DURATION,
          ).default("2160h"),
          renewBefore: goDurationSchema(
            "How long before expiry a device certificate is renewed, a Go duration (h, m, s; no days), " +
              "e.g. 720h (30 days, the default) or 12h. " +
              `At least ${MIN_CERTIFICATE_RENEW_BEFORE} and at most half of duration: a key then serves at least ` +
              "12h, and the revocation of each superseded key (kept in the tenant's CRL until that certificate " +
              "expires) is gone before the next renewal, so a device adds at most one superseded-key entry to " +
              "the CRL at any time. Every tenant's CRL is combined into one Secret of at most 1 MiB " +
              "(about 15,000 entries of 66 bytes across all tenants).",
            MIN_CERTIFICATE_RENEW_BEFORE,
          ).default("720h"),
          keyAlgorithm: z
            .enum(["ECDSA", "RSA", "Ed25519"])
            .default("ECDSA")
            .describe("Key algorithm of device keys: ECDSA P-256 (default), RSA 2048 or Ed25519."),
        })
        .refine(renewsAtMostHalfway, {
          message: RENEW_BEFORE_BOUND_MESSAGE,
          path: ["renewBefore"],
        })
        .prefault({})
        .describe("Defaults for x509 device certificates; a Device may override duration and renewBefore."),
      { validations: [renewBeforeAtMostHalfDuration] },
    ),
  })
  .prefault({})
  .describe("Limits and certificate defaults for the tenant's devices.");

export const tenantSpecSchema = z
  .object({
    displayName: z
      .string()
      .max(128)
      .optional()
      .describe("Human-readable name of the tenant, e.g. 'ACME Corp.'."),
    namespaces: setList(
      z
        .array(
          tenantNamespaceSchema(
            "A namespace name: a DNS label, not default, not kube-* and not the operator's own namespace.",
          ),
        )
        .min(1)
        .max(TENANT_MAX_NAMESPACES),
    )
      .optional()
      .describe(
        "Namespaces the tenant owns; the operator creates them and deletes them with the tenant. " +
          "Default: one namespace named after the tenant. E.g. [acme-prod, acme-staging]. Each name at most once. " +
          "A namespace that exists and " +
          "was not created for this tenant is never adopted (condition reason NamespaceNotOwned).",
      ),
    admins: z
      .array(adminSchema)
      .max(32)
      .optional()
      .describe(
        "Users, groups and service accounts bound to the tenant-admin ClusterRole in every tenant namespace, " +
          "e.g. [{kind: Group, name: acme-admins}]. A ServiceAccount of another tenant's namespace is not bound " +
          "(condition reason AdminOfOtherTenant).",
      ),
    network: networkSchema.prefault({}),
    broker: z
      .object({ topicRoot: topicRootSchema.optional() })
      .prefault({})
      .describe("Where the tenant lives on the MQTT broker."),
    devices: devicesSchema,
    quota: z
      .object({
        hard: kube(
          z
            .record(z.string().max(253), quantitySchema)
            .refine((limits) => Object.keys(limits).length <= QUOTA_MAX_RESOURCES, {
              message: `at most ${QUOTA_MAX_RESOURCES} resources`,
            }),
          { openApi: { maxProperties: QUOTA_MAX_RESOURCES } },
        )
          .optional()
          .describe("ResourceQuota hard limits, e.g. {pods: 50, requests.cpu: '8', requests.memory: 16Gi}."),
      })
      .optional()
      .describe(
        "A ResourceQuota put into each of the tenant's namespaces; the Device count is capped by maxDevices.",
      ),
    devicePolicy: z
      .object({
        quarantineOn: setList(z.array(z.enum(QUARANTINE_TRIGGERS)).max(QUARANTINE_TRIGGERS.length))
          .optional()
          .describe(
            "Security events that quarantine the device they come from: it is cut off from the broker, its " +
              "certificate revoked or its password discarded, and Ready=False with reason Quarantined, until " +
              "an admin removes the annotation 'iot.tenant-operator.io/quarantined' from the Device. " +
              "TamperReported: the device published a report on its reserved topic " +
              "'<topicRoot>/devices/<device>/security/report'. Default: none (events are only recorded).",
          ),
      })
      .optional()
      .describe("What the operator does to a device on its own when the device reports a security incident."),
    suspended: z
      .boolean()
      .default(false)
      .describe(
        "When true, every device of the tenant is cut off from the broker until it is set back to false.",
      ),
  })
  .prefault({})
  .describe(
    "What the tenant should be: its namespaces, admins, network allow-lists, broker root and device limits.",
  );

export const tenantStatusSchema = z
  .object({
    conditions: conditionsSchema(
      "Ready (all below True, for observedGeneration), NamespacesReady, NetworkIsolated, AdminsBound, PKIReady, BrokerReady, and Stalled (True with reason ActionRequired while one of them is False for a reason only a person can fix, e.g. NamespaceNotOwned or TopicRootConflict; kstatus and Flux then report Failed). Wait with: kubectl wait --for=condition=Ready tenant/acme",
    ),
    observedGeneration: observedGenerationSchema,
    namespaces: z
      .array(z.string().max(DNS_LABEL_MAX_LENGTH))
      .max(TENANT_MAX_NAMESPACES)
      .optional()
      .describe("Namespaces that exist and belong to the tenant."),
    deviceCount: z.int().min(0).optional().describe("Number of Devices in the tenant's namespaces."),
    topicRoot: z
      .string()
      .max(TOPIC_ROOT_MAX_LENGTH)
      .optional()
      .describe("The topic root in effect: spec.broker.topicRoot or its default."),
  })
  .describe("What the operator observed; written by the operator only.");

const TENANT_NAME_DESCRIPTION =
  "Name of the tenant: a DNS label that is not default, kube-* or the operator's namespace, because it also " +
  "names the tenant's default namespace.";
const tenantNameSchema = tenantNamespaceSchema(TENANT_NAME_DESCRIPTION);

export const tenantSchema = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal("Tenant"),
  metadata: objectMetaSchema(tenantNameSchema),
  spec: tenantSpecSchema,
  status: tenantStatusSchema.optional(),
});

export type Tenant = z.infer<typeof tenantSchema>;
export type TenantSpec = z.infer<typeof tenantSpecSchema>;
export type TenantStatus = z.infer<typeof tenantStatusSchema>;

export function parseTenant(object: unknown): Tenant {
  return tenantSchema.parse(object);
}

const effectiveTopicRootCel = (object: string) =>
  `(has(${object}.spec.broker.topicRoot) ? ${object}.spec.broker.topicRoot : '${DEFAULT_TOPIC_ROOT_PREFIX}' + ${object}.metadata.name)`;

export const tenantResource: ResourceDefinition = {
  kind: "Tenant",
  plural: "tenants",
  shortNames: ["tn"],
  scope: "Cluster",
  description:
    "A Tenant is one customer of the IoT platform. The operator gives it namespaces that no other tenant can " +
    "reach, RBAC for its admins, a quota, a private CA for its devices and a topic root on the MQTT broker " +
    "that no other tenant can publish or subscribe to.",
  nameDescription: TENANT_NAME_DESCRIPTION,
  spec: tenantSpecSchema,
  status: tenantStatusSchema,
  rootRules: [
    ...objectNameRules("Tenant", true),
    {
      rule: `${effectiveTopicRootCel("self")} == ${effectiveTopicRootCel("oldSelf")}`,
      message:
        "spec.broker.topicRoot is immutable: it cannot be changed, set to another value than the default, or removed",
      fieldPath: ".spec.broker.topicRoot",
    },
  ],
  printerColumns: [
    readyColumn,
    reasonColumn,
    {
      name: "Namespaces",
      type: "string",
      jsonPath: ".status.namespaces",
      description: "Namespaces that belong to the tenant.",
    },
    { name: "Devices", type: "integer", jsonPath: ".status.deviceCount", description: "Number of devices." },
    {
      name: "Topic Root",
      type: "string",
      jsonPath: ".status.topicRoot",
      description: "The tenant's MQTT topic root.",
      priority: 1,
    },
    ageColumn,
  ],
};
