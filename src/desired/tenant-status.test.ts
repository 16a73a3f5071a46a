import { describe, expect, it } from "vitest";
import { ConditionReason } from "../api/conditions.js";
import { type TenantObservation, tenantConditions } from "./tenant-status.js";

const healthy: TenantObservation = {
  wantedNamespaces: 2,
  readyNamespaces: ["a", "b"],
  notOwned: [],
  quotaPending: [],
  foreignAllowFrom: [],
  foreignAdmins: [],
  pki: { ready: true, reason: ConditionReason.Reconciled, message: "" },
  broker: { ready: true, message: "in sync" },
  topicRoot: "tenants/a",
};

const byType = (o: TenantObservation) =>
  Object.fromEntries(tenantConditions(o).map((c) => [c.type, `${c.status}/${c.reason}`]));

describe("tenantConditions", () => {
  it("is Ready when everything holds", () => {
    expect(byType(healthy)).toEqual({
      NamespacesReady: "True/Reconciled",
      NetworkIsolated: "True/Reconciled",
      AdminsBound: "True/Reconciled",
      PKIReady: "True/Reconciled",
      BrokerReady: "True/Reconciled",
      Stalled: "False/Reconciled",
      Ready: "True/Reconciled",
    });
  });

  it.each<[string, Partial<TenantObservation>, string, string, string]>([
    [
      "a namespace is somebody else's",
      { notOwned: ["b"], readyNamespaces: ["a"] },
      "NamespacesReady",
      "False/NamespaceNotOwned",
      "True/ActionRequired",
    ],
    [
      "a namespace is still being created",
      { readyNamespaces: ["a"] },
      "NamespacesReady",
      "False/Progressing",
      "False/Reconciled",
    ],
    [
      "the quota is not counted yet",
      { quotaPending: ["a"] },
      "NamespacesReady",
      "False/Progressing",
      "False/Reconciled",
    ],
    [
      "the allow-list names another tenant",
      { foreignAllowFrom: ["other"] },
      "NetworkIsolated",
      "False/NamespaceOfOtherTenant",
      "True/ActionRequired",
    ],
    [
      "an admin is another tenant's ServiceAccount",
      { foreignAdmins: ["other/ci"] },
      "AdminsBound",
      "False/AdminOfOtherTenant",
      "True/ActionRequired",
    ],
    [
      "no namespace is ready",
      { readyNamespaces: [] },
      "NetworkIsolated",
      "False/DependencyNotReady",
      "False/Reconciled",
    ],
    [
      "the CA is not issued",
      { pki: { ready: false, reason: ConditionReason.IssuerNotReady, message: "waiting for the tenant CA" } },
      "PKIReady",
      "False/IssuerNotReady",
      "False/Reconciled",
    ],
    [
      "a Secret named like the tenant's CA is someone else's",
      { pki: { ready: false, reason: ConditionReason.CANotOwned, message: "left alone" } },
      "PKIReady",
      "False/CANotOwned",
      "True/ActionRequired",
    ],
    [
      "the root CA Secret is missing",
      { pki: { ready: false, reason: ConditionReason.RootCANotFound, message: "no root" } },
      "PKIReady",
      "False/RootCANotFound",
      "True/ActionRequired",
    ],
    [
      "the broker is down",
      { broker: { ready: false, message: "connection refused" } },
      "BrokerReady",
      "False/BrokerError",
      "False/Reconciled",
    ],
    [
      "the topic root overlaps an older tenant's",
      { rootConflict: "acme" },
      "BrokerReady",
      "False/TopicRootConflict",
      "True/ActionRequired",
    ],
  ])("is not Ready when %s", (_, change, type, expected, stalled) => {
    const conditions = byType({ ...healthy, ...change });
    expect(conditions[type]).toBe(expected);
    expect(conditions.Stalled).toBe(stalled);
    expect(conditions.Ready).toBe("False/DependencyNotReady");
  });

  it("names what is not ready, and reports a root conflict even when the broker is fine", () => {
    const conditions = tenantConditions({
      ...healthy,
      pki: { ready: false, reason: ConditionReason.IssuerNotReady, message: "waiting for the tenant CA" },
      rootConflict: "acme",
    });
    expect(conditions.find((c) => c.type === "Ready")?.message).toBe("not ready: PKIReady, BrokerReady");
    expect(conditions.find((c) => c.type === "BrokerReady")?.message).toContain("older tenant acme");
  });
});
