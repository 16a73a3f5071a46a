import { describe, expect, it } from "vitest";
import { API_VERSION } from "../api/group.js";
import {
  DEVICE_FINALIZER,
  QUARANTINE_ANNOTATION,
  ROTATE_PASSWORD_ANNOTATION,
  TENANT_LABEL,
} from "../desired/labels.js";
import { REVOCATION_KEY } from "../desired/revocation.js";
import type { KubeObject } from "../runtime/kube-object.js";
import { deviceSecurityEvents, revocationSecurityEvents, tenantSecurityEvents } from "./cluster-events.js";

const device = (changes: Record<string, unknown> = {}, metadata: Record<string, unknown> = {}): KubeObject =>
  ({
    apiVersion: API_VERSION,
    kind: "Device",
    metadata: {
      name: "meter",
      namespace: "acme",
      uid: "u1",
      resourceVersion: "1",
      finalizers: [DEVICE_FINALIZER],
      ...metadata,
    },
    spec: { enabled: true },
    ...changes,
  }) as KubeObject;

const ready = (reason: string, message = "") => ({
  status: { conditions: [{ type: "Ready", status: "False", reason, message }] },
});

const kindsOf = (events: readonly { kind: string }[]) => events.map((e) => e.kind);

describe("deviceSecurityEvents", () => {
  const cases: [string, KubeObject | undefined, KubeObject | undefined, string[]][] = [
    ["registered", undefined, device(), ["DeviceRegistered"]],
    [
      "a first certificate",
      device(),
      device({ status: { certificate: { serialNumber: "0a" } } }),
      ["CredentialsIssued"],
    ],
    [
      "a renewed certificate",
      device({ status: { certificate: { serialNumber: "0a" } } }),
      device({ status: { certificate: { serialNumber: "0b" } } }),
      ["CredentialsRenewed"],
    ],
    ["a first password", device(), device({ status: { username: "acme/meter" } }), ["CredentialsIssued"]],
    [
      "a password rotation asked for",
      device(),
      device({}, { annotations: { [ROTATE_PASSWORD_ANNOTATION]: "2026-11-28" } }),
      ["CredentialsRotated"],
    ],
    ["disabled", device(), device({ spec: { enabled: false } }), ["DeviceDisabled"]],
    ["enabled again", device({ spec: { enabled: false } }), device(), ["DeviceEnabled"]],
    [
      "quarantined",
      device(),
      device({}, { annotations: { [QUARANTINE_ANNOTATION]: "TamperReported at …" } }),
      ["DeviceQuarantined"],
    ],
    [
      "still quarantined: no new event",
      device({}, { annotations: { [QUARANTINE_ANNOTATION]: "a" } }),
      device({}, { annotations: { [QUARANTINE_ANNOTATION]: "a" } }),
      [],
    ],
    ["released", device({}, { annotations: { [QUARANTINE_ANNOTATION]: "a" } }), device(), ["DeviceReleased"]],
    ["quarantine is no refusal", device(), device(ready("Quarantined")), []],
    ["refused by the operator", device(), device(ready("DeviceNameTaken", "taken")), ["AdmissionRefused"]],
    ["still refused: no new event", device(ready("DeviceNameTaken")), device(ready("DeviceNameTaken")), []],
    [
      "one refusal carried by two conditions (CredentialsIssued and Ready, as the operator writes it): one event",
      device(),
      device({
        status: {
          conditions: ["CredentialsIssued", "Ready"].map((type) => ({
            type,
            status: "False",
            reason: "DeviceNameTaken",
            message: "taken",
          })),
        },
      }),
      ["AdmissionRefused"],
    ],
    ["disabled is no refusal", device(), device(ready("Disabled")), []],
    ["finalizer stripped while not deleting", device(), device({}, { finalizers: [] }), ["FinalizerRemoved"]],
    [
      "finalizer removed while deleting (the operator's own work)",
      device({}, { deletionTimestamp: "2026-11-28T05:00:00Z" }),
      device({}, { deletionTimestamp: "2026-11-28T05:00:00Z", finalizers: [] }),
      [],
    ],
    [
      "deleted through the finalizer",
      device({}, { deletionTimestamp: "2026-11-28T05:00:00Z" }),
      undefined,
      ["DeviceDeleted"],
    ],
    [
      "deleted at once, with no finalizer",
      device({}, { finalizers: [] }),
      undefined,
      ["DeviceDeletedWithoutFinalizer"],
    ],
    ["an unchanged resync", device(), device(), []],
  ];
  it.each(cases)("%s", (_name, before, after, kinds) => {
    const events = deviceSecurityEvents(before, after, "acme");
    expect(kindsOf(events)).toEqual(kinds);
    for (const event of events)
      expect(event).toMatchObject({ tenant: "acme", device: "acme/meter", source: "cluster" });
  });

  it("names the refusal's reason and message", () => {
    expect(deviceSecurityEvents(device(), device(ready("DeviceLimitReached", "3 of 3")), "acme")).toEqual([
      expect.objectContaining({ type: "Warning", note: "3 of 3", detail: { reason: "DeviceLimitReached" } }),
    ]);
  });
});

describe("tenantSecurityEvents", () => {
  const tenant = (spec: Record<string, unknown>, conditions: unknown[] = []): KubeObject =>
    ({
      apiVersion: API_VERSION,
      kind: "Tenant",
      metadata: { name: "acme", uid: "t1", resourceVersion: "1" },
      spec,
      status: { conditions },
    }) as KubeObject;
  const conflict = {
    type: "NamespacesReady",
    status: "False",
    reason: "NamespaceNotOwned",
    message: "ns x exists",
  };
  const cases: [string, KubeObject, KubeObject, string[]][] = [
    ["suspended", tenant({}), tenant({ suspended: true }), ["TenantSuspended"]],
    ["resumed", tenant({ suspended: true }), tenant({ suspended: false }), ["TenantResumed"]],
    ["an ownership conflict", tenant({}), tenant({}, [conflict]), ["OwnershipConflict"]],
    ["the same conflict again", tenant({}, [conflict]), tenant({}, [conflict]), []],
  ];
  it.each(cases)("%s", (_name, before, after, kinds) => {
    expect(kindsOf(tenantSecurityEvents(before, after))).toEqual(kinds);
  });
});

describe("revocationSecurityEvents", () => {
  it("names the Device and serial of a revocation record", () => {
    const revocation = {
      serialNumber: "0a",
      revokedAt: "2026-11-28T05:00:00Z",
      notAfter: "2027-11-28T05:00:00Z",
      device: "acme/meter",
    };
    const record = {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: "revocation-acme-0a",
        uid: "r1",
        resourceVersion: "1",
        labels: { [TENANT_LABEL]: "acme" },
      },
      data: { [REVOCATION_KEY]: Buffer.from(JSON.stringify(revocation)).toString("base64") },
    };
    expect(revocationSecurityEvents(record, "acme")).toEqual([
      expect.objectContaining({
        kind: "CredentialsRevoked",
        device: "acme/meter",
        detail: { serialNumber: "0a" },
      }),
    ]);
  });
});
