import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { clusterAccess, inClusterCredentials, kubeconfigCredentials } from "./cluster-access.js";

const b64 = (text: string) => Buffer.from(text).toString("base64");

function kubeconfig(user: Record<string, unknown>, cluster: Record<string, unknown> = {}) {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    "current-context": "local",
    clusters: [{ name: "local", cluster: { server: "https://127.0.0.1:6443", ...cluster } }],
    users: [{ name: "admin", user }],
    contexts: [{ name: "local", context: { cluster: "local", user: "admin" } }],
  });
}

describe("reading a kubeconfig without the client library", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "cluster-access-"));
    await writeFile(join(dir, "ca.pem"), "CA");
    await writeFile(join(dir, "admin.pem"), "CERT");
    await writeFile(join(dir, "admin-key.pem"), "KEY");
  });

  it.each([
    {
      what: "client certificate and key inline, CA inline",
      text: () =>
        kubeconfig(
          { "client-certificate-data": b64("CERT"), "client-key-data": b64("KEY") },
          { "certificate-authority-data": b64("CA") },
        ),
      expected: { ca: "CA", cert: "CERT", key: "KEY" },
    },
    {
      what: "files named relative to the kubeconfig (as the test harness writes it)",
      text: () =>
        kubeconfig(
          { "client-certificate": "admin.pem", "client-key": join(dir, "admin-key.pem") },
          { "certificate-authority": "ca.pem" },
        ),
      expected: { ca: "CA", cert: "CERT", key: "KEY" },
    },
    {
      what: "a bearer token, TLS checks off and a server name",
      text: () =>
        kubeconfig({ token: "t0k" }, { "insecure-skip-tls-verify": true, "tls-server-name": "api" }),
      expected: { token: "t0k", insecure: true, serverName: "api" },
    },
  ])("$what", ({ text, expected }) => {
    const credentials = kubeconfigCredentials(text(), join(dir, "config"));
    expect(credentials?.server).toBe("https://127.0.0.1:6443");
    expect({
      ...credentials,
      server: undefined,
      ca: credentials?.ca?.toString(),
      cert: credentials?.cert?.toString(),
      key: credentials?.key?.toString(),
    }).toEqual({ server: undefined, ca: undefined, cert: undefined, key: undefined, ...expected });
  });

  it.each([
    { what: "an exec plugin", text: kubeconfig({ exec: { command: "aws", apiVersion: "v1" } }) },
    { what: "an auth provider", text: kubeconfig({ "auth-provider": { name: "oidc" } }) },
    { what: "basic auth", text: kubeconfig({ username: "u", password: "p" }) },
    { what: "a proxy", text: kubeconfig({ token: "t" }, { "proxy-url": "http://proxy:3128" }) },
    { what: "no current context", text: kubeconfig({ token: "t" }).replace("current-context: local", "") },
  ])("leaves $what to the client library (undefined)", ({ text }) => {
    expect(kubeconfigCredentials(text, join(dir, "config"))).toBeUndefined();
  });

  it("reads the pod's service account, brackets an IPv6 service address and re-reads a rotated token after a minute", async () => {
    await writeFile(join(dir, "ca.crt"), "POD-CA");
    await writeFile(join(dir, "token"), "first\n");
    const credentials = inClusterCredentials(
      { KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" },
      dir,
    );
    expect(credentials.server).toBe("https://[fd00::1]:443");
    expect(credentials.ca?.toString()).toBe("POD-CA");
    let now = 0;
    const access = clusterAccess(credentials, () => now);
    const authorization = async () => {
      const options: { headers?: Record<string, string> } = {};
      await access.applyToHTTPSOptions(options);
      return options.headers?.authorization;
    };
    expect(await authorization()).toBe("Bearer first");
    await writeFile(join(dir, "token"), "second\n");
    now = 30_000;
    expect(await authorization()).toBe("Bearer first");
    now = 61_000;
    expect(await authorization()).toBe("Bearer second");
  });
});
