import { describe, expect, it } from "vitest";
import type { BrokerDevice } from "./adapter.js";
import {
  type Acl,
  canonicalAcls,
  desiredDevice,
  gateName,
  gateTenant,
  narrows,
  ownerRef,
  passwordFingerprint,
} from "./desired.js";

const base: BrokerDevice = {
  tenant: "acme",
  device: "sensor-1",
  topicRoot: "tenants/acme",
  credentials: { type: "x509", username: "CN=sensor-1,O=acme" },
  enabled: true,
  suspended: false,
};

const send = (topic: string): Acl => ({ acltype: "publishClientSend", topic, priority: 0, allow: true });
const sub = (topic: string): Acl => ({ acltype: "subscribePattern", topic, priority: 0, allow: true });
const receive = (topic: string): Acl => ({
  acltype: "publishClientReceive",
  topic,
  priority: 0,
  allow: true,
});

/** Every device's own reserved report topic, and no other device's, whatever its grant. */
const reports = (root: string, device = "sensor-1"): Acl[] => [
  {
    acltype: "publishClientSend",
    topic: `${root}/devices/${device}/security/report`,
    priority: 2,
    allow: true,
  },
  { acltype: "publishClientSend", topic: `${root}/devices/+/security/report`, priority: 1, allow: false },
];

describe("desiredDevice", () => {
  it.each([
    {
      name: "default: only the own subtree, shared form and delivery included",
      device: base,
      acls: [
        receive("tenants/acme/devices/sensor-1/#"),
        send("tenants/acme/devices/sensor-1/#"),
        sub("$share/+/tenants/acme/devices/sensor-1/#"),
        sub("tenants/acme/devices/sensor-1/#"),
      ],
    },
    {
      name: "spec grants replace the own subtree, under the tenant root",
      device: {
        ...base,
        topicRoot: "fleet/eu/acme",
        topics: { publish: ["alerts/+", "devices/sensor-1/state"], subscribe: ["#"] },
      },
      acls: [
        receive("fleet/eu/acme/#"),
        send("fleet/eu/acme/alerts/+"),
        send("fleet/eu/acme/devices/sensor-1/state"),
        sub("$share/+/fleet/eu/acme/#"),
        sub("fleet/eu/acme/#"),
      ],
    },
    {
      name: "a read-only application publishes nothing",
      device: { ...base, topics: { publish: [], subscribe: ["#"] } },
      acls: [receive("tenants/acme/#"), sub("$share/+/tenants/acme/#"), sub("tenants/acme/#")],
    },
    {
      name: "a write-only device receives nothing",
      device: { ...base, topics: { publish: ["devices/sensor-1/readings"], subscribe: [] } },
      acls: [send("tenants/acme/devices/sensor-1/readings")],
    },
    {
      name: "a grant over the whole tree still reaches no other device's report topic",
      device: { ...base, topics: { publish: ["#"], subscribe: [] } },
      acls: [send("tenants/acme/#")],
    },
    {
      name: "a grant that repeats a report topic is left out (dynsec keeps one ACL per topic and type)",
      device: {
        ...base,
        topics: { publish: ["devices/sensor-1/security/report", "devices/+/security/report"], subscribe: [] },
      },
      acls: [],
    },
  ])("$name", ({ device, acls }) => {
    const desired = desiredDevice("iot:", device);
    expect(desired.owner).toBe("iot:acme:sensor-1");
    expect(desired.acls).toEqual(canonicalAcls([...acls, ...reports(device.topicRoot)]));
  });

  it.each([
    { name: "enabled", enabled: true, suspended: false, client: { username: "CN=sensor-1,O=acme" } },
    { name: "disabled", enabled: false, suspended: false, client: undefined },
    // The tenant's gate cuts a suspended tenant off; the device keeps its client.
    { name: "suspended", enabled: true, suspended: true, client: { username: "CN=sensor-1,O=acme" } },
    { name: "disabled and suspended", enabled: false, suspended: true, client: undefined },
  ])("client when $name", ({ enabled, suspended, client }) => {
    expect(desiredDevice("iot:", { ...base, enabled, suspended }).client).toEqual(client);
  });

  it("gives password devices their password and its fingerprint", () => {
    const desired = desiredDevice("p:", {
      ...base,
      credentials: { type: "password", username: "acme/sensor-1", password: "s3cret" },
    });
    expect(desired.client).toEqual({
      username: "acme/sensor-1",
      password: "s3cret",
      passwordFingerprint: passwordFingerprint("s3cret"),
    });
    expect(passwordFingerprint("s3cret")).not.toContain("s3cret");
    expect(passwordFingerprint("s3cret")).not.toBe(passwordFingerprint("other"));
  });
});

describe("narrows", () => {
  it.each([
    { current: [send("a/#")], next: [send("a/#"), send("b/#")], expected: false },
    { current: [send("a/#"), send("b/#")], next: [send("a/#")], expected: true },
    { current: [send("a/#")], next: [sub("a/#")], expected: true },
    { current: [], next: [], expected: false },
  ])("$current.length → $next.length: $expected", ({ current, next, expected }) => {
    expect(narrows(current, next)).toBe(expected);
  });
});

describe("ownerRef", () => {
  it.each([
    { owner: "iot:acme:sensor-1", expected: { tenant: "acme", device: "sensor-1" } },
    { owner: "other:acme:sensor-1", expected: undefined },
    { owner: "iot:stray", expected: undefined },
    { owner: "iot:a:b:c", expected: undefined },
  ])("$owner", ({ owner, expected }) => {
    expect(ownerRef("iot:", owner)).toEqual(expected);
  });
});

describe("gateTenant", () => {
  it.each([
    { name: "iot:acme", expected: "acme" },
    { name: "iot:acme:sensor-1", expected: undefined },
    { name: "other:acme", expected: undefined },
    { name: "iot:", expected: undefined },
  ])("$name", ({ name, expected }) => {
    expect(gateTenant("iot:", name)).toEqual(expected);
    if (expected) expect(gateName("iot:", expected)).toBe(name);
  });
});
