import { describe, expect, it } from "vitest";
import type { BrokerDevice } from "./adapter.js";
import { type AuthorizationRequest, decideLogin } from "./nats-login.js";

const sensor: BrokerDevice = {
  tenant: "acme",
  device: "s1",
  topicRoot: "tenants/acme",
  credentials: { type: "password", username: "acme/s1", password: "right" },
  enabled: true,
  suspended: false,
};
const certificateDevice: BrokerDevice = {
  ...sensor,
  device: "s2",
  credentials: { type: "x509", username: "CN=s2,O=acme" },
};
const known = new Map([sensor, certificateDevice].map((d) => [d.credentials.username, d]));

function request(overrides: {
  user?: string;
  pass?: string;
  clientId?: string;
  type?: string;
}): AuthorizationRequest {
  return {
    server_id: { id: "NSERVER", name: "n1" },
    user_nkey: "UUSER",
    client_info: {
      type: overrides.type ?? "mqtt",
      mqtt_id: overrides.clientId ?? overrides.user ?? "acme/s1",
    },
    connect_opts: { user: overrides.user ?? "acme/s1", pass: overrides.pass ?? "right" },
  };
}

describe("decideLogin", () => {
  const decide = (r: AuthorizationRequest, devices = known) => decideLogin(r, (u) => devices.get(u));

  it("admits a served device with its password and its username as client id, with exactly its grant", () => {
    const decision = decide(request({}));
    expect(decision).toMatchObject({ allow: true, device: sensor });
    expect(decision.allow && decision.permissions.sub).toEqual([
      "tenants.acme.devices.s1",
      "tenants.acme.devices.s1.>",
    ]);
  });

  it.each([
    ["a wrong password", request({ pass: "wrong" }), "unknown user"],
    ["an unknown user", request({ user: "acme/nobody" }), "unknown user"],
    ["a certificate identity with a password", request({ user: "CN=s2,O=acme" }), "unknown user"],
    [
      "another device's client id",
      request({ clientId: "acme/s9" }),
      "the MQTT client id must be the device's username",
    ],
    ["a NATS-protocol client", request({ type: "nats" }), "only MQTT devices log in here"],
  ])("refuses %s", (_name, r, reason) => expect(decide(r)).toEqual({ allow: false, reason }));

  it.each([
    ["disabled", { enabled: false }],
    ["suspended", { suspended: true }],
  ])("refuses a %s device even with the right password", (_name, change) => {
    const devices = new Map([["acme/s1", { ...sensor, ...change }]]);
    expect(decide(request({}), devices)).toEqual({ allow: false, reason: "device is cut off" });
  });
});
