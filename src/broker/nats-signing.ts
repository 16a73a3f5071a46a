import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from "node:crypto";
import { type KeyPair, Prefix } from "@nats-io/nkeys";
// The nkey text encoding (prefix byte, base32, CRC-16) lives in nkeys' codec, which its index does
// not re-export; the package has no "exports" map, so the module is importable as it is.
import { Codec } from "@nats-io/nkeys/lib/codec.js";

/**
 * Ed25519 through Node's crypto (OpenSSL) instead of nkeys' pure-JavaScript tweetnacl, which
 * derives the key pair from the seed again on every call: on this project's 2-core machine one
 * signature cost 5–40 ms and one `getPublicKey` 7 ms, and every device login through the auth
 * callout needs a verification and two signatures, which capped logins at about 8 per second.
 * The keys and the signatures are the same (RFC 8032 Ed25519; tested against nkeys both ways).
 */

/** RFC 8410 PKCS#8 wrapping of a raw 32-byte Ed25519 private key (the nkey seed's payload). */
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

function rawPublicKey(key: KeyObject): Buffer {
  const x = key.export({ format: "jwk" }).x;
  if (x === undefined) throw new Error("not an Ed25519 key");
  return Buffer.from(x, "base64url");
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") },
    format: "jwk",
  });
}

/** A key pair from an nkey seed (`SO…`, `SA…`, `SU…`), signing natively; its public key computed once. */
export function nativeKeyPair(seed: string): KeyPair {
  const encodedSeed = new TextEncoder().encode(seed);
  const { prefix, buf } = Codec.decodeSeed(encodedSeed);
  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8_PREFIX, buf]),
    format: "der",
    type: "pkcs8",
  });
  const publicKey = createPublicKey(privateKey);
  const rawPublic = rawPublicKey(publicKey);
  const publicText = new TextDecoder().decode(Codec.encode(prefix, rawPublic));
  const unsupported = (what: string) => () => {
    throw new Error(`${what} is not supported by a signing key pair`);
  };
  return {
    getPublicKey: () => publicText,
    // As nkeys: the 64-byte Ed25519 secret key (seed, then public key), nkey-encoded.
    getPrivateKey: () => Codec.encode(Prefix.Private, Buffer.concat([buf, rawPublic])),
    getSeed: () => encodedSeed,
    sign: (input) => new Uint8Array(sign(null, input, privateKey)),
    verify: (input, signature) => verify(null, input, publicKey, signature),
    clear: () => encodedSeed.fill(0),
    seal: unsupported("seal"),
    open: unsupported("open"),
  };
}

const JWT_ALGORITHMS = new Set(["ed25519-nkey", "ed25519"]);

/**
 * The claims of a NATS JWT whose signature verifies against its issuer (`iss`), as @nats-io/jwt's
 * `decode` checks them (header type and algorithm, v1 and v2 signing input), verified natively.
 */
export function verifiedClaims(jwt: string): unknown {
  const [header, body, signature, ...rest] = jwt.split(".");
  if (header === undefined || body === undefined || signature === undefined || rest.length > 0)
    throw new Error("invalid jwt: expected three parts");
  const h = JSON.parse(Buffer.from(header, "base64url").toString("utf8")) as { typ?: unknown; alg?: unknown };
  if (h.typ !== "jwt" && h.typ !== "JWT") throw new Error(`not a NATS jwt: typ ${String(h.typ)}`);
  if (typeof h.alg !== "string" || !JWT_ALGORITHMS.has(h.alg))
    throw new Error(`not a NATS jwt: alg ${String(h.alg)}`);
  const claims = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as { iss?: unknown };
  if (typeof claims.iss !== "string") throw new Error("invalid jwt: no issuer");
  // Codec._decode checks the base32 text and its CRC; the first byte is the key's role.
  const issuer = Codec._decode(new TextEncoder().encode(claims.iss)).slice(1);
  const signed = h.alg === "ed25519-nkey" ? `${header}.${body}` : body;
  if (!verify(null, Buffer.from(signed), publicKeyObject(issuer), Buffer.from(signature, "base64url")))
    throw new Error("jwt signature verification failed");
  return claims;
}
