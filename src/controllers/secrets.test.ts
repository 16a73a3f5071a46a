import { webcrypto } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { credentialsSecret } from "../desired/device.js";
import { DEVICE_LABEL, managedLabels } from "../desired/labels.js";
import { REVOCATION_LABEL } from "../desired/revocation.js";
import * as x509 from "../pki/x509.js";
import { needsApply, withDigest } from "../runtime/apply.js";
import type { KubeObject } from "../runtime/kube-object.js";
import { Resource } from "./resources.js";
import { base64, cachedKeyPair, contentDigest, type Secret, secretCacheForm } from "./secrets.js";

/** A client certificate the way cert-manager issues one for device `sensor-1` of tenant `acme`. */
async function devicePem(): Promise<string> {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await webcrypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned(
    { name: "O=acme, CN=sensor-1", keys, signingAlgorithm: alg, serialNumber: "0a1b" },
    webcrypto,
  );
  return certificate.toString("pem");
}

const secret = (labels: Record<string, string>, data: Record<string, string>): KubeObject => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name: "s", namespace: "ns", uid: "u", resourceVersion: "1", labels },
  type: "Opaque",
  data,
});

const device = { ...managedLabels("acme"), [DEVICE_LABEL]: "sensor-1" };

describe("what the cache keeps of a Secret", () => {
  let crt: string;
  beforeAll(async () => {
    crt = base64(await devicePem());
  });

  it.each([
    {
      what: "a device's issued key pair: digests and the certificate's broker identity, no bytes",
      labels: device,
      data: () => ({ "tls.crt": crt, "tls.key": base64("KEY"), "ca.crt": base64("CA") }),
      keptData: undefined,
      digested: ["ca.crt", "tls.crt", "tls.key"],
      username: "CN=sensor-1,O=acme",
    },
    {
      what: "a password device's Secret: the password (the broker resync needs it), digests of both",
      labels: device,
      data: () => ({ username: base64("acme/sensor-1"), password: base64("pw") }),
      keptData: () => ({ password: base64("pw") }),
      digested: ["password", "username"],
      username: undefined,
    },
    {
      what: "a device Secret whose tls.crt is no certificate: digests, no identity (the device waits)",
      labels: device,
      data: () => ({ "tls.crt": base64("garbage"), "tls.key": base64("KEY") }),
      keptData: undefined,
      digested: ["tls.crt", "tls.key"],
      username: undefined,
    },
  ])("$what", ({ labels, data, keptData, digested, username }) => {
    const cached = secretCacheForm(secret(labels, data())) as Secret;
    expect(cached.data).toEqual(keptData?.());
    expect(Object.keys(cached.digests ?? {}).sort()).toEqual(digested);
    for (const [key, value] of Object.entries(data()))
      expect(cached.digests?.[key]).toBe(contentDigest(value));
    expect(cached.certificate?.username).toBe(username);
    expect(cached.metadata).toEqual(secret(labels, {}).metadata);
  });

  it("keeps the operator's annotations of a device's key pair and none of cert-manager's", () => {
    const issued = secret(device, { "tls.crt": crt, "tls.key": base64("KEY") });
    issued.metadata.annotations = {
      "cert-manager.io/certificate-name": "acme.sensor-1",
      "cert-manager.io/common-name": "sensor-1",
      "iot.tenant-operator.io/applied-digest": "d1",
    };
    expect(secretCacheForm(issued).metadata.annotations).toEqual({
      "iot.tenant-operator.io/applied-digest": "d1",
    });
    const foreignOnly = secret(device, { "tls.crt": crt });
    foreignOnly.metadata.annotations = { "cert-manager.io/common-name": "sensor-1" };
    expect(secretCacheForm(foreignOnly).metadata).toEqual(secret(device, {}).metadata);
  });

  it.each([
    {
      what: "a revocation record (the CRL is made of it)",
      labels: { ...device, [REVOCATION_LABEL]: "true" },
    },
    { what: "a tenant's CA or CRL (signing reads the key)", labels: managedLabels("acme") },
    { what: "a Secret with no device label", labels: {} },
  ])("keeps $what whole", ({ labels }) => {
    const object = secret(labels, { "tls.key": base64("KEY"), "revocation.json": base64("{}") });
    expect(secretCacheForm(object)).toBe(object);
  });

  it("knows from the cache alone whether a mirror holds the issued key pair, as if it had the bytes", () => {
    const issued = secretCacheForm(secret(device, { "tls.crt": crt, "tls.key": base64("KEY") })) as Secret;
    const owner = { metadata: { name: "sensor-1", namespace: "ns", uid: "d" }, spec: {} };
    const data = { "tls.crt": crt, "tls.key": base64("KEY"), "ca.crt": base64("CA") };
    const mirror = credentialsSecret(owner as never, "acme", { type: "kubernetes.io/tls", data });
    const shape = credentialsSecret(owner as never, "acme", { type: "kubernetes.io/tls", data: {} });
    const fromCache = cachedKeyPair(shape, issued, base64("CA"));
    expect(fromCache).toEqual(secretCacheForm(mirror as KubeObject));
    // Written and cached, the mirror needs no write; with another key it does.
    const written = {
      ...secretCacheForm(withDigest(mirror, secretCacheForm) as KubeObject),
      metadata: { ...withDigest(mirror, secretCacheForm).metadata, uid: "m", resourceVersion: "2" },
    } as KubeObject;
    expect(needsApply(mirror, written, secretCacheForm)).toBe(false);
    const rekeyed = { ...mirror, data: { ...data, "tls.key": base64("OTHER") } };
    expect(needsApply(rekeyed, written, secretCacheForm)).toBe(true);
  });
});

describe("what the cache keeps of a Certificate", () => {
  it("keeps metadata and spec (compared before each apply) and drops cert-manager's status", () => {
    const certificate = {
      apiVersion: "cert-manager.io/v1",
      kind: "Certificate",
      metadata: {
        name: "acme.sensor-1",
        namespace: "iot-system",
        uid: "u",
        resourceVersion: "1",
        labels: device,
      },
      spec: { secretName: "acme.sensor-1", commonName: "sensor-1" },
      status: { conditions: [{ type: "Ready", status: "True" }], notAfter: "2027-01-01T00:00:00Z" },
    };
    const { status: _dropped, ...kept } = certificate;
    expect(Resource.certificate.cacheForm(certificate)).toEqual(kept);
  });
});
