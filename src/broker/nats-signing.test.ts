import { encodeUser } from "@nats-io/jwt";
import {
  createAccount,
  createOperator,
  createServer,
  createUser,
  fromPublic,
  type KeyPair,
} from "@nats-io/nkeys";
import { describe, expect, it } from "vitest";
import { nativeKeyPair, verifiedClaims } from "./nats-signing.js";

const seedOf = (pair: KeyPair) => new TextDecoder().decode(pair.getSeed());
const message = new TextEncoder().encode("the bytes a claim signs");

describe("nativeKeyPair", () => {
  it.each([
    ["operator", createOperator],
    ["account", createAccount],
    ["user", createUser],
    ["server", createServer],
  ])("is the same %s key as nkeys', signatures verifying both ways", (_kind, create) => {
    const reference = create();
    const native = nativeKeyPair(seedOf(reference));

    expect(native.getPublicKey()).toBe(reference.getPublicKey());
    expect(seedOf(native)).toBe(seedOf(reference));
    expect(Buffer.from(native.getPrivateKey())).toEqual(Buffer.from(reference.getPrivateKey()));
    expect(fromPublic(reference.getPublicKey()).verify(message, native.sign(message))).toBe(true);
    expect(native.verify(message, reference.sign(message))).toBe(true);
    // Ed25519 is deterministic: the same key signs the same bytes identically.
    expect(Buffer.from(native.sign(message))).toEqual(Buffer.from(reference.sign(message)));
  });

  it("refuses a signature of another key and of other bytes", () => {
    const native = nativeKeyPair(seedOf(createAccount()));
    const other = createAccount();
    expect(native.verify(message, other.sign(message))).toBe(false);
    expect(native.verify(new TextEncoder().encode("other bytes"), native.sign(message))).toBe(false);
  });
});

describe("verifiedClaims", () => {
  const account = createAccount();

  it.each([
    ["nkeys", () => account],
    ["native", () => nativeKeyPair(seedOf(account))],
  ])("returns the claims of a JWT signed by %s keys", async (_signer, signer) => {
    const jwt = await encodeUser("device", createUser(), signer());
    expect(verifiedClaims(jwt)).toMatchObject({ iss: account.getPublicKey(), name: "device" });
  });

  const tamper = async (change: (parts: string[]) => string[]) => {
    const parts = (await encodeUser("device", createUser(), account)).split(".");
    return change(parts).join(".");
  };
  const body = (parts: string[]) => JSON.parse(Buffer.from(parts[1] ?? "", "base64url").toString());
  const encoded = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

  it.each([
    [
      "a changed claim",
      (p: string[]) => [p[0] ?? "", encoded({ ...body(p), name: "admin" }), p[2] ?? ""],
      /verification failed/,
    ],
    [
      "another issuer named",
      (p: string[]) => [p[0] ?? "", encoded({ ...body(p), iss: createAccount().getPublicKey() }), p[2] ?? ""],
      /verification failed/,
    ],
    [
      "no issuer",
      (p: string[]) => [p[0] ?? "", encoded({ ...body(p), iss: undefined }), p[2] ?? ""],
      /no issuer/,
    ],
    [
      "a header of another type",
      (p: string[]) => [encoded({ typ: "JWS", alg: "ed25519-nkey" }), p[1] ?? "", p[2] ?? ""],
      /typ/,
    ],
    [
      "another algorithm",
      (p: string[]) => [encoded({ typ: "JWT", alg: "none" }), p[1] ?? "", p[2] ?? ""],
      /alg/,
    ],
    ["a missing signature", (p: string[]) => [p[0] ?? "", p[1] ?? ""], /three parts/],
  ])("refuses %s", async (_case, change, error) => {
    const jwt = await tamper(change);
    expect(() => verifiedClaims(jwt)).toThrow(error);
  });
});
