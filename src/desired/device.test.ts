import { describe, expect, it } from "vitest";
import { deviceCertificate, servesDevice } from "./device.js";
import { DEVICE_LABEL, DEVICE_NAMESPACE_LABEL, DEVICE_UID_LABEL } from "./labels.js";

const pump = { namespace: "acme", name: "pump", uid: "u1" };
const labels = (namespace: string, name: string, uid?: string) => ({
  [DEVICE_NAMESPACE_LABEL]: namespace,
  [DEVICE_LABEL]: name,
  ...(uid ? { [DEVICE_UID_LABEL]: uid } : {}),
});

describe("servesDevice", () => {
  it.each<
    [string, Record<string, string> | undefined, { namespace: string; name: string; uid?: string }, boolean]
  >([
    ["its own object", labels("acme", "pump", "u1"), pump, true],
    ["an earlier Device of the same namespace and name", labels("acme", "pump", "u0"), pump, false],
    ["a namesake in another namespace of the tenant", labels("acme-b", "pump", "u2"), pump, false],
    ["an object from before UIDs were recorded", labels("acme", "pump"), pump, true],
    [
      "any Device of the namespace and name when no UID is asked",
      labels("acme", "pump", "u0"),
      { namespace: "acme", name: "pump" },
      true,
    ],
    ["no labels", undefined, pump, false],
  ])("%s", (_, objectLabels, device, serves) => {
    expect(servesDevice(objectLabels ? { metadata: { labels: objectLabels } } : undefined, device)).toBe(
      serves,
    );
  });

  it("holds for the Certificate made for the Device and for the Secret cert-manager writes from it", () => {
    const tenant = {
      metadata: { name: "acme", uid: "00000000-0000-0000-0000-00000000acme" },
      spec: { devices: { certificate: { duration: "2160h", renewBefore: "360h", keyAlgorithm: "ECDSA" } } },
    } as unknown as Parameters<typeof deviceCertificate>[1];
    const certificate = deviceCertificate(
      { metadata: pump, spec: {} as never },
      tenant,
      "iot-system",
    ) as unknown as {
      metadata: { labels: Record<string, string> };
      spec: { secretTemplate: { labels: Record<string, string> } };
    };
    expect(servesDevice(certificate, pump)).toBe(true);
    expect(servesDevice({ metadata: certificate.spec.secretTemplate }, pump)).toBe(true);
    expect(servesDevice(certificate, { ...pump, uid: "u2" })).toBe(false);
  });
});
