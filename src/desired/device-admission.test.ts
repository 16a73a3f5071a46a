import { describe, expect, it } from "vitest";
import {
  type Admission,
  type AdmissionDevice,
  admitDevice,
  admitDevices,
  nameHolder,
  prepareAdmission,
  type TenantAdmissionView,
} from "./device-admission.js";

const device = (uid: string, namespace: string, name: string, createdAt: string): AdmissionDevice => ({
  uid,
  namespace,
  name,
  createdAt,
});
const pump = device("u1", "acme", "pump", "2026-01-01T00:00:00Z");
const twin = device("u2", "acme-b", "pump", "2026-01-02T00:00:00Z");
const valve = device("u3", "acme", "valve", "2026-01-03T00:00:00Z");
const tenant = { name: "acme", deleting: false, maxDevices: 10, rootOwner: undefined };

const view = (
  devices: readonly AdmissionDevice[],
  overrides: Partial<NonNullable<TenantAdmissionView["tenant"]>> | "none" = {},
) =>
  prepareAdmission({
    tenant: overrides === "none" ? undefined : { ...tenant, ...overrides },
    devices,
  });

describe("admitDevice", () => {
  it.each<[string, AdmissionDevice, Admission, string | undefined]>([
    ["a lone device", pump, view([pump]), undefined],
    ["no tenant", pump, view([pump], "none"), "TenantNotFound"],
    ["tenant being deleted", pump, view([pump], { deleting: true }), "TenantNotFound"],
    ["topic root inside an older tenant's", pump, view([pump], { rootOwner: "globex" }), "TopicRootConflict"],
    [
      "root conflict is checked before the name",
      twin,
      view([pump, twin], { rootOwner: "g" }),
      "TopicRootConflict",
    ],
    ["the older holder of a name keeps it", pump, view([twin, pump]), undefined],
    ["a later Device with a taken name", twin, view([pump, twin]), "DeviceNameTaken"],
    ["within the limit", valve, view([pump, valve], { maxDevices: 2 }), undefined],
    [
      "over the limit: the youngest is refused",
      valve,
      view([pump, valve], { maxDevices: 1 }),
      "DeviceLimitReached",
    ],
    ["the oldest stays within a lowered limit", pump, view([pump, valve], { maxDevices: 1 }), undefined],
    [
      "a refused duplicate still counts",
      valve,
      view([pump, twin, valve], { maxDevices: 2 }),
      "DeviceLimitReached",
    ],
    ["name taken wins over the limit", twin, view([pump, twin], { maxDevices: 1 }), "DeviceNameTaken"],
  ])("%s", (_, candidate, tenantView, reason) => {
    expect(admitDevice(candidate, tenantView)?.reason).toBe(reason);
  });

  it("breaks an age tie by namespace/name, so every replica decides alike", () => {
    const a = device("a", "ns-a", "pump", "2026-01-01T00:00:00Z");
    const b = device("b", "ns-b", "pump", "2026-01-01T00:00:00Z");
    expect(admitDevice(a, view([b, a]))).toBeUndefined();
    expect(admitDevice(b, view([a, b]))?.reason).toBe("DeviceNameTaken");
  });

  it("names the Device that holds the name in the refusal", () => {
    expect(admitDevice(twin, view([pump, twin]))?.message).toContain("acme/pump");
  });
});

describe("admitDevices", () => {
  it("gives every device the verdict admitDevice gives it", () => {
    const all = view([valve, twin, pump], { maxDevices: 2 });
    const verdicts = admitDevices(all);
    for (const d of all.devices) expect(verdicts.get(d.uid)).toEqual(admitDevice(d, all));
    expect([...verdicts].map(([uid, r]) => [uid, r?.reason])).toEqual([
      ["u3", "DeviceLimitReached"],
      ["u2", "DeviceNameTaken"],
      ["u1", undefined],
    ]);
  });
});

describe("nameHolder", () => {
  it("is the oldest Device with the name, whatever its verdict", () => {
    expect(nameHolder(view([twin, pump]), "pump")?.uid).toBe("u1");
    expect(nameHolder(view([twin]), "pump")?.uid).toBe("u2");
    expect(nameHolder(view([pump]), "valve")).toBeUndefined();
  });

  it("is the same Device whatever the list order, between Devices created in the same second", () => {
    const same = "2026-01-01T00:00:00Z";
    const first = device("u4", "acme-b", "pump", same);
    const second = device("u5", "acme", "pump", same);
    const holder = nameHolder(view([first, second]), "pump")?.uid;
    expect(holder).toBeDefined();
    expect(nameHolder(view([second, first]), "pump")?.uid).toBe(holder);
  });
});
