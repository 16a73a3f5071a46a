import { describe, expect, it } from "vitest";
import type { BrokerDevice } from "./adapter.js";
import {
  type Acl,
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
  ])("$name", ({ device, acls }) => {
    const desired = desiredDevice("iot:", device);
    expect(desired.owner).toBe("iot:acme:sensor-1");
    expect(desired.acls).toEqual(acls);
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
