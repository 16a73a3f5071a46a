import { describe, expect, it } from "vitest";
import { mosquittoConfig } from "./mosquitto-config.js";

const options = {
  bindAddress: "0.0.0.0",
  mtlsPort: 8883,
  passwordPort: 8884,
  adminPort: 1883,
  rootCaFile: "/tls/ca.crt",
  adminCaFile: "/admin-ca/ca.crt",
  serverCertFile: "/tls/tls.crt",
  serverKeyFile: "/tls/tls.key",
  crlFile: "/crl/crl.pem",
  dynsecPlugin: "/usr/lib/mosquitto_dynamic_security.so",
  dynsecStateFile: "/data/dynsec.json",
};

/** The lines of one listener block, from its `listener` line to the next blank line. */
function listener(config: string, port: number): string[] {
  const lines = config.split("\n");
  const start = lines.indexOf(`listener ${port} 0.0.0.0`);
  const end = lines.indexOf("", start);
  return lines.slice(start + 1, end);
}

describe("mosquittoConfig", () => {
  const config = mosquittoConfig(options);

  it("makes dynamic security the only authority", () => {
    expect(config).toContain("allow_anonymous false");
    expect(config).toContain(
      "plugin /usr/lib/mosquitto_dynamic_security.so\nplugin_opt_config_file /data/dynsec.json",
    );
  });

  it("requires a client certificate chained to the root and not revoked on the device listener", () => {
    expect(listener(config, 8883)).toEqual([
      "cafile /tls/ca.crt",
      "certfile /tls/tls.crt",
      "keyfile /tls/tls.key",
      "crlfile /crl/crl.pem",
      "require_certificate true",
      "use_subject_as_username true",
      "use_username_as_clientid true",
    ]);
  });

  it("serves password devices over TLS without taking the certificate as identity", () => {
    expect(listener(config, 8884)).toEqual([
      "certfile /tls/tls.crt",
      "keyfile /tls/tls.key",
      "use_username_as_clientid true",
    ]);
  });

  it("admits only the holder of an admin-CA certificate on the admin listener, named by its CN", () => {
    expect(listener(config, 1883)).toEqual([
      "cafile /admin-ca/ca.crt",
      "certfile /tls/tls.crt",
      "keyfile /tls/tls.key",
      "require_certificate true",
      "use_identity_as_username true",
    ]);
  });

  it("expires persistent sessions and bounds their queues", () => {
    expect(config).toContain(
      "persistent_client_expiration 1d\nmax_queued_messages 1000\nmax_queued_bytes 1048576",
    );
  });

  it.each([
    [{ runAsRoot: true }, "user root"],
    [{ pidFile: "/run/m.pid" }, "pid_file /run/m.pid"],
  ])("adds %o only when asked", (extra, line) => {
    expect(mosquittoConfig({ ...options, ...extra })).toContain(line);
    expect(config).not.toContain(line);
  });
});
