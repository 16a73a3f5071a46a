import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { CoreV1Api } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { adminKubeConfig, eventually, objectApi, uniqueName } from "../support/kube.js";

describe("the real cert-manager controller", () => {
  it("issues a certificate from a SelfSigned issuer into a Secret that matches the request", async () => {
    const kc = adminKubeConfig();
    const core = kc.makeApiClient(CoreV1Api);
    const objects = objectApi(kc);
    const ns = uniqueName("smoke-cm");
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await objects.create({
      apiVersion: "cert-manager.io/v1",
      kind: "Issuer",
      metadata: { name: "selfsigned", namespace: ns },
      spec: { selfSigned: {} },
    } as never);
    await objects.create({
      apiVersion: "cert-manager.io/v1",
      kind: "Certificate",
      metadata: { name: "web", namespace: ns },
      spec: {
        secretName: "web-tls",
        commonName: "web.smoke.test",
        dnsNames: ["web.smoke.test", "www.smoke.test"],
        duration: "2160h",
        privateKey: { algorithm: "ECDSA", size: 256 },
        issuerRef: { name: "selfsigned", kind: "Issuer" },
      },
    } as never);

    const secret = await eventually(
      "certificate secret",
      async () => {
        const s = await core.readNamespacedSecret({ namespace: ns, name: "web-tls" });
        return s.data?.["tls.crt"] ? s : undefined;
      },
      60_000,
    );
    const cert = new X509Certificate(Buffer.from(secret.data?.["tls.crt"] ?? "", "base64"));
    const key = createPrivateKey(Buffer.from(secret.data?.["tls.key"] ?? "", "base64"));
    expect(cert.subject).toContain("CN=web.smoke.test");
    expect(cert.subjectAltName).toBe("DNS:web.smoke.test, DNS:www.smoke.test");
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(cert.checkPrivateKey(key)).toBe(true);
    expect(createPublicKey(key).export({ format: "jwk" })).toEqual(cert.publicKey.export({ format: "jwk" }));
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    expect(days).toBeCloseTo(90, 0);

    const certificate = await eventually("Certificate Ready", async () => {
      const c = (await objects.read({
        apiVersion: "cert-manager.io/v1",
        kind: "Certificate",
        metadata: { name: "web", namespace: ns },
      })) as {
        metadata: { generation?: number };
        status?: {
          conditions?: Array<{ type: string; status: string; reason?: string; observedGeneration?: number }>;
        };
      };
      return c.status?.conditions?.some((x) => x.type === "Ready" && x.status === "True") ? c : undefined;
    });
    // Ready for the spec it was given (not a stale generation), for the reason cert-manager gives an issued one.
    expect(certificate.status?.conditions?.find((x) => x.type === "Ready")).toMatchObject({
      reason: "Ready",
      observedGeneration: certificate.metadata.generation,
    });
    await core.deleteNamespace({ name: ns });
  });
});
