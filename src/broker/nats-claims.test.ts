import { decode } from "@nats-io/jwt";
import { describe, expect, it } from "vitest";
import {
  bootstrapKeys,
  encodeDeviceUser,
  encodeTenantAccount,
  newBootstrapSeeds,
  serverTrust,
  tenantLimits,
} from "./nats-claims.js";

const keys = bootstrapKeys(newBootstrapSeeds());

describe("tenantLimits", () => {
  it("gives one connection per device and a per-device share of subscriptions and storage", () => {
    expect(tenantLimits(100, { subscriptions: 20, jetStreamBytes: 1024, payloadBytes: 4096 })).toEqual({
      connections: 100,
      subscriptions: 2000,
      payloadBytes: 4096,
      jetStreamBytes: 102_400,
    });
  });
});

describe("claims", () => {
  it("signs a tenant account with the operator key, with its limits and no imports or exports", async () => {
    const account = keys.authAccount; // any account key
    const jwt = await encodeTenantAccount(
      "acme",
      account,
      keys.operator,
      tenantLimits(2, { subscriptions: 5, jetStreamBytes: 10, payloadBytes: 99 }),
    );
    const claims = decode<{ limits: Record<string, unknown> }>(jwt);
    expect(claims.iss).toBe(keys.operator.getPublicKey());
    expect(claims.nats.limits).toMatchObject({
      conn: 2,
      subs: 10,
      payload: 99,
      disk_storage: 20,
      imports: 0,
      exports: 0,
    });
  });

  it("issues a device user for MQTT only with allow-lists only, signed by the tenant's account", async () => {
    const jwt = await encodeDeviceUser({
      userPublicKey: keys.calloutUser.getPublicKey(),
      device: "s1",
      account: keys.authAccount,
      permissions: { pub: ["a.b"], sub: ["a.b.>", "a.b"] },
      expiresAt: 2_000_000_000,
    });
    const claims = decode<Record<string, unknown>>(jwt);
    expect(claims.iss).toBe(keys.authAccount.getPublicKey());
    expect(claims.exp).toBe(2_000_000_000);
    expect(claims.nats).toMatchObject({
      pub: { allow: ["a.b"] },
      sub: { allow: ["a.b.>", "a.b"] },
      allowed_connection_types: ["MQTT"],
    });
    expect(JSON.stringify(claims.nats)).not.toContain("deny");
  });

  it("lets only the callout service user skip the callout, and gives the sentinel no permission", async () => {
    const trust = await serverTrust(keys);
    const auth = decode<{ authorization: { auth_users: string[]; xkey?: string } }>(
      trust.preload[keys.authAccount.getPublicKey()] ?? "",
    );
    expect(auth.nats.authorization?.auth_users).toEqual([keys.calloutUser.getPublicKey()]);
    // Requests (with devices' passwords) are sealed to the callout's curve key.
    expect(auth.nats.authorization).toMatchObject({ xkey: keys.calloutXkey.getPublicKey() });
    expect(keys.calloutXkey.getPublicKey()).toMatch(/^X/);
    const sentinel = decode<Record<string, unknown>>(trust.defaultSentinel);
    expect(sentinel.nats).toMatchObject({ bearer_token: true, pub: { deny: [">"] }, sub: { deny: [">"] } });
  });
});
