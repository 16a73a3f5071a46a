import { describe, expect, it } from "vitest";
import { UsageError } from "./io.js";
import { ALL_SETTINGS, flagOf, resolveSettings, settingOptions, settingsSchema } from "./settings.js";

describe("CLI settings from one definition", () => {
  it.each(ALL_SETTINGS)("%s has a description, and a flag of the same name unless it is a secret", (name) => {
    expect(settingsSchema.shape[name].description).toBeTruthy();
    const flags = settingOptions([name]).map((o) => o.long);
    expect(flags).toEqual(name === "BROKER_ADMIN_PASSWORD" ? [] : [`--${flagOf(name)}`]);
  });

  it.each([
    { flags: {}, env: {}, expected: { BROKER_MTLS_PORT: 8883, BROKER_POD_PORTS: [8883] } },
    { flags: {}, env: { BROKER_MTLS_PORT: "9883" }, expected: { BROKER_MTLS_PORT: 9883 } },
    {
      flags: { brokerMtlsPort: "7883" },
      env: { BROKER_MTLS_PORT: "9883" },
      expected: { BROKER_MTLS_PORT: 7883 },
    },
    { flags: { brokerPodPorts: "8883, 443" }, env: {}, expected: { BROKER_POD_PORTS: [8883, 443] } },
    { flags: {}, env: { TENANT_SERVICE_TYPES: "" }, expected: { TENANT_SERVICE_TYPES: ["ClusterIP"] } },
    { flags: { kubeconfig: "/k" }, env: { KUBECONFIG: "/e" }, expected: { KUBECONFIG: "/k" } },
  ])("flags $flags over environment $env give $expected", ({ flags, env, expected }) => {
    expect(resolveSettings(ALL_SETTINGS, flags, env)).toMatchObject(expected);
  });

  it("takes the broker admin key's passphrase from the environment only", () => {
    expect(
      resolveSettings(ALL_SETTINGS, { brokerAdminPassword: "flag" }, {}).BROKER_ADMIN_PASSWORD,
    ).toBeUndefined();
    expect(resolveSettings(ALL_SETTINGS, {}, { BROKER_ADMIN_PASSWORD: "env" }).BROKER_ADMIN_PASSWORD).toBe(
      "env",
    );
  });

  it("reads only the settings a command declares", () => {
    expect(resolveSettings(["KUBECONFIG"], {}, { BROKER_MTLS_PORT: "not-a-port" }).BROKER_MTLS_PORT).toBe(
      8883,
    );
  });

  it.each([
    { flags: { brokerMtlsPort: "0" }, message: /--broker-mtls-port \(BROKER_MTLS_PORT\) "0"/ },
    {
      flags: { dnsPodLabel: "k8s-app" },
      message: /--dns-pod-label \(DNS_POD_LABEL\) "k8s-app": must be key=value/,
    },
    { flags: { tenantServiceTypes: "ClusterIP,Bogus" }, message: /--tenant-service-types/ },
    { flags: { logLevel: "loud" }, message: /--log-level \(LOG_LEVEL\) "loud"/ },
  ])("refuses $flags as misuse naming the flag and the variable", ({ flags, message }) => {
    expect(() => resolveSettings(ALL_SETTINGS, flags, {})).toThrow(UsageError);
    expect(() => resolveSettings(ALL_SETTINGS, flags, {})).toThrow(message);
  });
});
