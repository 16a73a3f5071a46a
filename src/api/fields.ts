import { isIP } from "node:net";
import { z } from "zod";
import {
  DNS_LABEL_MAX_LENGTH,
  DNS_LABEL_PATTERN,
  RESERVED_NAMESPACE_PREFIX,
  RESERVED_NAMESPACES,
} from "./group.js";
import { type CelRule, type KubeMeta, kube } from "./openapi.js";

/** Field schemas and CEL rules that both kinds share. */

const dnsLabel = new RegExp(DNS_LABEL_PATTERN);

export function dnsLabelSchema(description: string) {
  return z.string().min(1).max(DNS_LABEL_MAX_LENGTH).regex(dnsLabel).describe(description);
}

export function isReservedNamespace(name: string): boolean {
  return (
    name.startsWith(RESERVED_NAMESPACE_PREFIX) || (RESERVED_NAMESPACES as readonly string[]).includes(name)
  );
}

const celStringList = (values: readonly string[]) => `[${values.map((value) => `'${value}'`).join(", ")}]`;

/** CEL over `expression` (a string) that holds when it is not a reserved namespace name. */
function notReservedCel(expression: string): string {
  return `!${expression}.startsWith('${RESERVED_NAMESPACE_PREFIX}') && !(${expression} in ${celStringList(RESERVED_NAMESPACES)})`;
}

const reservedNamespacesText = `${RESERVED_NAMESPACES.join(", ")} or ${RESERVED_NAMESPACE_PREFIX}*`;
const reservedNamespaceMessage = `must not be a reserved namespace (${reservedNamespacesText})`;

/** A namespace a tenant may own: a DNS label that is not a system namespace or the operator's own. */
export function tenantNamespaceSchema(description: string) {
  return kube(
    dnsLabelSchema(description).refine((name) => !isReservedNamespace(name), {
      message: reservedNamespaceMessage,
    }),
    { validations: [{ rule: notReservedCel("self"), message: reservedNamespaceMessage }] },
  );
}

/** The root-level CEL rule (and message) for an object's own name; only metadata.name is visible to CEL. */
export function objectNameRules(kind: string, reserved: boolean): CelRule[] {
  const rules: CelRule[] = [
    {
      rule: `self.metadata.name.size() <= ${DNS_LABEL_MAX_LENGTH} && self.metadata.name.matches('${DNS_LABEL_PATTERN}')`,
      message: `metadata.name of a ${kind} must be a DNS label: at most ${DNS_LABEL_MAX_LENGTH} lower-case letters, digits and '-', starting and ending with a letter or digit`,
      fieldPath: ".metadata.name",
    },
  ];
  if (reserved) {
    rules.push({
      rule: notReservedCel("self.metadata.name"),
      message: `metadata.name of a ${kind} must not be a reserved namespace name (${reservedNamespacesText}): it names the ${kind}'s default namespace`,
      fieldPath: ".metadata.name",
    });
  }
  return rules;
}

/** Go-style durations as cert-manager takes them, limited to h, m and s, each at most once and in that order. */
const GO_DURATION_PATTERN = "^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";
const goDuration = new RegExp(GO_DURATION_PATTERN);

/** Seconds in a duration of the API's form; undefined for anything else (its own check reports that). */
export function goDurationSeconds(text: string): number | undefined {
  const match = /^(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$/.exec(text);
  if (!match || text.length < 2) return undefined;
  const [, hours = "0", minutes = "0", seconds = "0"] = match;
  return Number(hours) * 3600 + Number(minutes) * 60 + Number(seconds);
}

export function goDurationSchema(description: string, atLeast: string) {
  return kube(
    z
      .string()
      .min(2)
      .max(24)
      .regex(goDuration)
      .refine(
        (text) => (goDurationSeconds(text) ?? Number.POSITIVE_INFINITY) >= (goDurationSeconds(atLeast) ?? 0),
        {
          message: `must be at least ${atLeast}`,
        },
      )
      .describe(description),
    {
      validations: [
        {
          rule: `!self.matches('${GO_DURATION_PATTERN}') || duration(self) >= duration('${atLeast}')`,
          message: `must be at least ${atLeast}`,
        },
      ],
    },
  );
}

/**
 * Bounds on device certificate lifetimes, so that renewal and revocation cannot churn: a key is
 * used for at least half its lifetime, so renewals come at most every 12 hours, and a superseded
 * key's CRL entry (kept until that certificate expires, at most renewBefore later) is gone before
 * the next renewal: each device holds at most one superseded-key entry in its tenant's CRL.
 */
export const MIN_CERTIFICATE_DURATION = "24h";
export const MIN_CERTIFICATE_RENEW_BEFORE = "1h";
export const RENEW_BEFORE_BOUND_MESSAGE = "renewBefore must be at most half of duration";

/** The rule both kinds put on a certificate block: renewed in the second half of its lifetime. */
export const renewBeforeAtMostHalfDuration: CelRule = {
  rule: `!has(self.duration) || !has(self.renewBefore) || !self.duration.matches('${GO_DURATION_PATTERN}') || !self.renewBefore.matches('${GO_DURATION_PATTERN}') || duration(self.duration) - duration(self.renewBefore) >= duration(self.renewBefore)`,
  message: RENEW_BEFORE_BOUND_MESSAGE,
  fieldPath: ".renewBefore",
};

export function renewsAtMostHalfway(lifetime: { duration?: string; renewBefore?: string }): boolean {
  const duration = lifetime.duration === undefined ? undefined : goDurationSeconds(lifetime.duration);
  const renewBefore =
    lifetime.renewBefore === undefined ? undefined : goDurationSeconds(lifetime.renewBefore);
  return duration === undefined || renewBefore === undefined || 2 * renewBefore <= duration;
}

/** IPv4 or IPv6 prefix in CIDR notation, as Kubernetes' CEL isCIDR() accepts it. */
export function isCidr(text: string): boolean {
  const [address, prefix, ...rest] = text.split("/");
  if (address === undefined || prefix === undefined || rest.length > 0 || !/^\d{1,3}$/.test(prefix))
    return false;
  const family = isIP(address);
  return family !== 0 && Number(prefix) <= (family === 4 ? 32 : 128) && !address.includes("%");
}

/** resource.Quantity as the API server validates it. */
const QUANTITY_PATTERN =
  "^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";

export const quantitySchema = z
  .union([z.int(), z.string().max(64).regex(new RegExp(QUANTITY_PATTERN))])
  .describe("A Kubernetes quantity such as 10, 500m or 4Gi.");

/** metav1.Condition, the standard shape that kubectl and GitOps tools understand. */
export const conditionSchema = z.object({
  type: z
    .string()
    .min(1)
    .max(316)
    .regex(
      /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/,
    )
    .describe("Type of the condition in CamelCase, e.g. Ready."),
  status: z.enum(["True", "False", "Unknown"]).describe("Status of the condition: True, False or Unknown."),
  observedGeneration: z
    .int()
    .min(0)
    .optional()
    .describe("metadata.generation of the object that the condition was set for."),
  lastTransitionTime: z.iso.datetime().describe("When the condition last changed its status."),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
    .describe("Why the condition is in its status, in CamelCase; one of the exported reason constants."),
  message: z.string().max(32768).describe("What happened, for humans."),
});

export function conditionsSchema(description: string) {
  return mapList(z.array(conditionSchema).max(16), ["type"]).optional().describe(description);
}

export const observedGenerationSchema = z
  .int()
  .min(0)
  .optional()
  .describe(
    "metadata.generation that the status describes; older than metadata.generation while the operator catches up.",
  );

/**
 * Lists whose entries are unique, by value (`set`) or by key fields (`map`). The API server refuses
 * duplicates through x-kubernetes-list-type; the zod refinement gives runtime parsing the same verdict.
 */
export function setList<List extends z.ZodArray>(list: List): List {
  return uniqueList(list, (item) => JSON.stringify(item), { listType: "set" });
}

export function mapList<List extends z.ZodArray<z.ZodObject>>(list: List, keys: readonly string[]): List {
  return uniqueList(
    list,
    (item) => JSON.stringify(keys.map((key) => (item as Record<string, unknown>)[key])),
    {
      listType: "map",
      listMapKeys: keys,
    },
  );
}

function uniqueList<List extends z.ZodArray>(
  list: List,
  identity: (item: unknown) => string,
  meta: KubeMeta,
): List {
  return kube(
    list.superRefine((items, context) => {
      const seen = new Set<string>();
      items.forEach((item, index) => {
        const key = identity(item);
        if (seen.has(key)) context.addIssue({ code: "custom", message: "duplicate entry", path: [index] });
        seen.add(key);
      });
    }),
    meta,
  );
}
