import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ConditionReason, REASONS_NEEDING_A_PERSON } from "../../src/api/conditions.js";
import { API_GROUP, API_VERSION } from "../../src/api/group.js";
import { type DeviceObservation, deviceConditions } from "../../src/desired/device-status.js";
import { type TenantObservation, tenantConditions } from "../../src/desired/tenant-status.js";
import { type ConditionUpdate, setCondition } from "../../src/runtime/conditions.js";
import { type GitOpsHealth, gitOpsHealth } from "../harness/gitops-health.js";

const argocd = resolve(dirname(fileURLToPath(import.meta.url)), "../../deploy/argocd");
const script = resolve(argocd, "health.lua");

const healthyTenant: TenantObservation = {
  wantedNamespaces: 1,
  readyNamespaces: ["acme"],
  notOwned: [],
  quotaPending: [],
  foreignAllowFrom: [],
  foreignAdmins: [],
  pki: { ready: true, reason: ConditionReason.Reconciled, message: "" },
  broker: { ready: true, message: "in sync" },
  topicRoot: "tenants/acme",
};
const issued = { status: "True", reason: ConditionReason.Reconciled } as const;
const healthyDevice: DeviceObservation = {
  credentials: issued,
  broker: { status: "True", reason: ConditionReason.Reconciled, message: "in sync" },
  enabled: true,
  suspended: false,
};
const refused = (reason: ConditionReason): Partial<DeviceObservation> => ({
  credentials: { status: "False", reason, message: `refused: ${reason}` },
});

/** The object as the operator leaves it: conditions and status.observedGeneration for `observed`. */
function stored(
  kind: "Tenant" | "Device",
  updates: readonly ConditionUpdate[] | undefined,
  generation: { current: number; observed: number },
): object {
  const metadata = { name: "d1", namespace: "acme", generation: generation.current };
  if (!updates) return { apiVersion: API_VERSION, kind, metadata };
  let conditions: ReturnType<typeof setCondition> = [];
  for (const update of updates)
    conditions = setCondition(conditions, update, {
      generation: generation.observed,
      nowMs: Date.UTC(2026, 0, 1),
    });
  return {
    apiVersion: API_VERSION,
    kind,
    metadata,
    status: { observedGeneration: generation.observed, conditions },
  };
}
const current = { current: 3, observed: 3 };
const stale = { current: 4, observed: 3 };
const tenant = (change: Partial<TenantObservation>, generation = current) =>
  stored("Tenant", tenantConditions({ ...healthyTenant, ...change }), generation);
const device = (change: Partial<DeviceObservation>, generation = current) =>
  stored("Device", deviceConditions({ ...healthyDevice, ...change }), generation);

/** One object per reason that needs a person, made by the status functions the reconcilers use. */
const stalledBy: Record<string, object> = {
  [ConditionReason.NamespaceNotOwned]: tenant({ notOwned: ["acme"], readyNamespaces: [] }),
  [ConditionReason.NamespaceOfOtherTenant]: tenant({ foreignAllowFrom: ["globex"] }),
  [ConditionReason.AdminOfOtherTenant]: tenant({ foreignAdmins: ["globex/ci"] }),
  [ConditionReason.TopicRootConflict]: tenant({ rootConflict: "globex" }),
  [ConditionReason.RootCANotFound]: tenant({
    pki: { ready: false, reason: ConditionReason.RootCANotFound, message: "no root CA" },
  }),
  [ConditionReason.CANotOwned]: tenant({
    pki: { ready: false, reason: ConditionReason.CANotOwned, message: "left alone" },
  }),
  [ConditionReason.TenantNotFound]: device(refused(ConditionReason.TenantNotFound)),
  [ConditionReason.DeviceLimitReached]: device(refused(ConditionReason.DeviceLimitReached)),
  [ConditionReason.DeviceNameTaken]: device(refused(ConditionReason.DeviceNameTaken)),
  [ConditionReason.InvalidCertificateSettings]: device(refused(ConditionReason.InvalidCertificateSettings)),
  [ConditionReason.Quarantined]: device({
    ...refused(ConditionReason.Quarantined),
    broker: { status: "True", reason: ConditionReason.Reconciled, message: "held cut off" },
  }),
};

// [case, object, Argo CD health, kstatus status]
const cases: [string, object, string, string][] = [
  ["a ready tenant at its current generation", tenant({}), "Healthy", "Current"],
  ["a ready device at its current generation", device({}), "Healthy", "Current"],
  ["a ready tenant whose spec changed since", tenant({}, stale), "Progressing", "InProgress"],
  ["a ready device whose spec changed since", device({}, stale), "Progressing", "InProgress"],
  // kstatus cannot tell "no status yet" from "no status at all" and calls it Current (see the
  // Flux healthCheckExprs in the docs); Argo CD's check waits for the operator.
  ["a tenant the operator has not seen", stored("Tenant", undefined, current), "Progressing", "Current"],
  ["a device the operator has not seen", stored("Device", undefined, current), "Progressing", "Current"],
  [
    "a tenant whose namespaces are being created",
    tenant({ readyNamespaces: [] }),
    "Progressing",
    "InProgress",
  ],
  [
    "a tenant waiting for its CA",
    tenant({ pki: { ready: false, reason: ConditionReason.IssuerNotReady, message: "waiting" } }),
    "Progressing",
    "InProgress",
  ],
  [
    "a tenant whose broker is down",
    tenant({ broker: { ready: false, message: "refused" } }),
    "Progressing",
    "InProgress",
  ],
  [
    "a device waiting for cert-manager",
    device({ credentials: { status: "False", reason: ConditionReason.Progressing, message: "waiting" } }),
    "Progressing",
    "InProgress",
  ],
  ["a disabled device", device({ enabled: false }), "Suspended", "InProgress"],
  ["a device of a suspended tenant", device({ suspended: true }), "Suspended", "InProgress"],
  [
    "a device refused at an older generation (the fix may be under way)",
    device(refused(ConditionReason.DeviceNameTaken), stale),
    "Progressing",
    "InProgress",
  ],
  ...Object.entries(stalledBy).map(([reason, object]): [string, object, string, string] => [
    `an object stalled by ${reason}`,
    object,
    "Degraded",
    "Failed",
  ]),
];

describe("GitOps health of Tenant and Device", () => {
  let health: GitOpsHealth;
  beforeAll(async () => {
    health = await gitOpsHealth();
  }, 900_000);

  it("covers every reason that needs a person", () => {
    expect(new Set(Object.keys(stalledBy))).toEqual(new Set(REASONS_NEEDING_A_PERSON));
  });

  it.each(
    cases.map(([name, object, argo, kstatus]) => [name, argo, kstatus, object] as const),
  )("%s: Argo CD %s, kstatus %s", (_, argo, kstatus, object) => {
    expect(health.argo(script, object).status).toBe(argo);
    expect(health.kstatus(object).status).toBe(kstatus);
  });

  it("says in Argo CD and kstatus which condition stalls the object and why", () => {
    const object = stalledBy[ConditionReason.DeviceNameTaken] as object;
    const expected = "CredentialsIssued DeviceNameTaken: refused: DeviceNameTaken";
    expect(health.argo(script, object).message).toBe(expected);
    expect(health.kstatus(object).message).toBe(expected);
  });

  it("ships the same script for both kinds in the argocd-cm snippet", () => {
    const configMap = parse(readFileSync(resolve(argocd, "argocd-cm.yaml"), "utf8")) as {
      data: Record<string, string>;
    };
    const lua = readFileSync(script, "utf8");
    expect(Object.keys(configMap.data).sort()).toEqual(
      ["Device", "Tenant"].map((kind) => `resource.customizations.health.${API_GROUP}_${kind}`),
    );
    for (const copy of Object.values(configMap.data)) expect(copy).toBe(lua);
  });
});
