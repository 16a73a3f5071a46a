import { describe, expect, it } from "vitest";
import { deviceSchema, parseDevice } from "./device.js";
import { goDurationSeconds, isCidr } from "./fields.js";
import { API_VERSION } from "./group.js";
import { parseTenant, tenantSchema } from "./tenant.js";

const tenant = (spec: unknown, name = "acme") => ({
  apiVersion: API_VERSION,
  kind: "Tenant",
  metadata: { name },
  spec,
});
const device = (spec: unknown, name = "sensor-1") => ({
  apiVersion: API_VERSION,
  kind: "Device",
  metadata: { name, namespace: "acme" },
  spec,
});

describe("Tenant schema", () => {
  it("fills the defaults the CRD declares", () => {
    expect(parseTenant(tenant(undefined)).spec).toEqual({
      network: {},
      broker: {},
      devices: {
        maxDevices: 100,
        certificate: { duration: "2160h", renewBefore: "720h", keyAlgorithm: "ECDSA" },
      },
      suspended: false,
    });
  });

  it.each([
    ["reserved name", tenant({}, "kube-public"), "metadata.name"],
    ["operator namespace as name", tenant({}, "iot-system"), "metadata.name"],
    ["namespace listed twice", tenant({ namespaces: ["a", "a"] }), "spec.namespaces.1"],
    ["reserved namespace", tenant({ namespaces: ["default"] }), "spec.namespaces.0"],
    [
      "ServiceAccount without namespace",
      tenant({ admins: [{ kind: "ServiceAccount", name: "x" }] }),
      "spec.admins.0.namespace",
    ],
    [
      "same port twice",
      tenant({ network: { egressPorts: [{ port: 1 }, { port: 1 }] } }),
      "spec.network.egressPorts.1",
    ],
    ["bad CIDR", tenant({ network: { allowEgressCIDRs: ["10.0.0.1"] } }), "spec.network.allowEgressCIDRs.0"],
    [
      "renewBefore after expiry",
      tenant({ devices: { certificate: { duration: "48h", renewBefore: "72h" } } }),
      "spec.devices.certificate.renewBefore",
    ],
    [
      "renewBefore over half of duration",
      tenant({ devices: { certificate: { duration: "48h", renewBefore: "25h" } } }),
      "spec.devices.certificate.renewBefore",
    ],
    [
      "duration under 24h",
      tenant({ devices: { certificate: { duration: "23h", renewBefore: "1h" } } }),
      "spec.devices.certificate.duration",
    ],
    [
      "renewBefore under 1h",
      tenant({ devices: { certificate: { duration: "24h", renewBefore: "59m" } } }),
      "spec.devices.certificate.renewBefore",
    ],
    ["float maxDevices", tenant({ devices: { maxDevices: 1.5 } }), "spec.devices.maxDevices"],
  ])("refuses %s at %s", (_, manifest, path) => {
    const paths = tenantSchema.safeParse(manifest).error?.issues.map((issue) => issue.path.join("."));
    expect(paths).toContain(path);
  });
});

describe("Device schema", () => {
  it("fills the defaults the CRD declares, and leaves topics unset for the device's own subtree", () => {
    expect(parseDevice(device({})).spec).toEqual({ enabled: true, authentication: { type: "x509" } });
    expect(parseDevice(device({ topics: { subscribe: ["#"] } })).spec.topics).toEqual({
      publish: [],
      subscribe: ["#"],
    });
  });

  it.each([
    ["device name with a dot", device({}, "a.b"), "metadata.name"],
    [
      "certificate on a password device",
      device({ authentication: { type: "password" }, certificate: {} }),
      "spec.certificate",
    ],
    ["filter listed twice", device({ topics: { publish: ["a", "a"] } }), "spec.topics.publish.1"],
    ["bad filter", device({ topics: { subscribe: ["#/a"] } }), "spec.topics.subscribe.0"],
  ])("refuses %s at %s", (_, manifest, path) => {
    const paths = deviceSchema.safeParse(manifest).error?.issues.map((issue) => issue.path.join("."));
    expect(paths).toContain(path);
  });
});

describe("field helpers", () => {
  it.each([
    ["2160h", 2160 * 3600],
    ["1h30m", 5400],
    ["90m", 5400],
    ["45s", 45],
    ["90d", undefined],
    ["1m1h", undefined],
    ["h", undefined],
  ])("goDurationSeconds(%j) = %j", (text, seconds) => {
    expect(goDurationSeconds(text)).toBe(seconds);
  });

  it.each([
    ["10.0.0.0/8", true],
    ["192.0.2.1/32", true],
    ["2001:db8::/32", true],
    ["10.0.0.0/33", false],
    ["10.0.0.0", false],
    ["10.0.0.0/8/1", false],
    ["example.com/24", false],
    ["fe80::1%eth0/64", false],
  ])("isCidr(%j) is %j", (text, expected) => {
    expect(isCidr(text)).toBe(expected);
  });
});

describe("the examples that kubectl explain teaches", () => {
  it.each<[string, unknown]>([
    [
      "a tenant with every example",
      tenant({
        namespaces: ["acme-prod", "acme-staging"],
        admins: [
          { kind: "User", name: "alice@example.com" },
          { kind: "Group", name: "acme-admins" },
          { kind: "ServiceAccount", name: "ci", namespace: "acme-ci" },
        ],
        network: {
          allowFromNamespaces: ["ingress-nginx", "monitoring"],
          allowEgressCIDRs: ["10.20.0.0/16", "203.0.113.7/32", "2001:db8::/32"],
          egressPorts: [{ port: 443 }, { port: 5683, protocol: "UDP" }, { port: 5432, protocol: "TCP" }],
        },
        devices: { certificate: { duration: "8760h", renewBefore: "720h" } },
        quota: { hard: { pods: 50, "requests.cpu": "8", "requests.memory": "16Gi" } },
      }),
    ],
    [
      "a tenant with minutes in its durations",
      tenant({ devices: { certificate: { duration: "36h30m", renewBefore: "12h" } } }),
    ],
    [
      "a device with every example",
      device({
        topics: {
          publish: ["devices/sensor-1/telemetry", "devices/sensor-1/events/+"],
          subscribe: ["devices/sensor-1/commands/#"],
        },
        certificate: { duration: "720h", renewBefore: "168h" },
      }),
    ],
    [
      "an application reading every device's telemetry",
      device({ topics: { subscribe: ["devices/+/telemetry"] } }, "app"),
    ],
  ])("accepts %s", (_, object) => {
    const parse = (object as { kind: string }).kind === "Tenant" ? parseTenant : parseDevice;
    expect(() => parse(object)).not.toThrow();
  });
});
