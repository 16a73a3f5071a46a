import { describe, expect, it } from "vitest";
import {
  devicePermissions,
  filterSubjects,
  mqttToSubject,
  NOTHING,
  permissionsNarrow,
} from "./nats-subjects.js";

describe("mqttToSubject", () => {
  it.each([
    ["tenants/acme/devices/s1/t", "tenants.acme.devices.s1.t"],
    ["tenants/acme/+/x", "tenants.acme.*.x"],
    ["tenants/acme/#", "tenants.acme.>"],
    // A literal dot may not become a separator: devices.s1 under acme is not devices/s1.
    ["tenants/acme/devices.s1/t", "tenants.acme.devices//s1.t"],
  ])("%s → %s", (topic, subject) => expect(mqttToSubject(topic)).toBe(subject));
});

describe("filterSubjects", () => {
  it("needs the parent level too for a trailing #, as the server subscribes to both", () => {
    expect(filterSubjects("a/b/#")).toEqual(["a.b.>", "a.b"]);
    expect(filterSubjects("a/+/c")).toEqual(["a.*.c"]);
  });
});

describe("devicePermissions", () => {
  it("grants a device without topics exactly its own subtree under the tenant root", () => {
    expect(devicePermissions({ topicRoot: "tenants/acme", device: "s1" })).toEqual({
      pub: ["tenants.acme.devices.s1", "tenants.acme.devices.s1.>"],
      sub: ["tenants.acme.devices.s1", "tenants.acme.devices.s1.>"],
    });
  });
  it("grants spec.topics alone when given, each under the tenant root", () => {
    expect(
      devicePermissions({
        topicRoot: "tenants/acme",
        device: "app",
        topics: { publish: ["cmd/s1"], subscribe: ["+/readings"] },
      }),
    ).toEqual({ pub: ["tenants.acme.cmd.s1"], sub: ["tenants.acme.*.readings"] });
  });

  it("allows nothing in a direction with no grant: NATS reads an empty allow-list as everything", () => {
    expect(
      devicePermissions({
        topicRoot: "tenants/acme",
        device: "meter",
        topics: { publish: ["devices/meter/readings"], subscribe: [] },
      }),
    ).toEqual({ pub: ["tenants.acme.devices.meter.readings"], sub: [NOTHING] });
  });
});

describe("permissionsNarrow", () => {
  const wide = { pub: ["a.>", "a"], sub: ["a.>", "a"] };
  it.each([
    [wide, { pub: ["a"], sub: ["a.>", "a"] }, true],
    [wide, { pub: ["a.>", "a"], sub: ["a"] }, true],
    [{ pub: ["a"], sub: ["a"] }, wide, false],
    [wide, wide, false],
  ])("%j → %j narrows: %s", (current, next, narrows) =>
    expect(permissionsNarrow(current, next)).toBe(narrows));
});
