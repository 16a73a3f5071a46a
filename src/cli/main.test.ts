import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { cli } from "../../test/support/cli.js";

const repoRoot = join(import.meta.dirname, "../..");
const example = (path: string) => join(repoRoot, "examples", path);

const kinds = (yaml: string) => parseAllDocuments(yaml).map((d) => (d.toJS() as { kind: string }).kind);

describe("the iot-tenant-operator command line", () => {
  it.each([
    [[]],
    [["run"]],
    [["install"]],
    [["verify"]],
    [["render"]],
    [["devices"]],
    [["devices", "import"]],
  ])("prints help for %j --help on stdout and exits 0", async (args) => {
    const result = await cli([...args, "--help"]);
    expect(result).toMatchObject({ code: 0, stderr: "" });
    expect(result.stdout).toMatch(/^Usage: iot-tenant-operator/);
  });

  it("documents every setting as a flag with the environment variable of the same name", async () => {
    const { stdout } = await cli(["run", "--help"]);
    expect(stdout).toMatch(/--broker-mtls-port <value>[\s\S]*\[env BROKER_MTLS_PORT, default 8883\]/);
    expect(stdout).toMatch(/--kubeconfig <value>[\s\S]*\[env KUBECONFIG\]/);
    expect(stdout).not.toContain("--broker-admin-password");
    expect(stdout).toMatch(
      /Environment only \(a flag would show it in the process list\):\n {2}BROKER_ADMIN_PASSWORD/,
    );
  });

  it.each([
    { args: [], message: /Usage: iot-tenant-operator/ },
    { args: ["frobnicate"], message: /unknown command 'frobnicate'[\s\S]*--help for usage/ },
    { args: ["verify", "--frobnicate"], message: /unknown option '--frobnicate'/ },
    { args: ["devices"], message: /Usage: iot-tenant-operator devices/ },
    { args: ["devices", "import", "x.csv"], message: /required option '--tenant <name>' not specified/ },
    {
      args: ["devices", "import", "--tenant", "acme", "--concurrency", "0", "x.csv"],
      message: /--concurrency <n>' argument '0' is invalid. must be a whole number from 1 to 256/,
    },
    {
      args: ["verify", "--broker-mtls-port", "99999"],
      message: /--broker-mtls-port \(BROKER_MTLS_PORT\) "99999": .*65535/,
    },
    { args: ["verify"], message: /no cluster configured: set KUBECONFIG or pass --kubeconfig/ },
    {
      args: ["verify", "--kubeconfig", "/nonexistent/config"],
      message: /kubeconfig \/nonexistent\/config does not exist: set KUBECONFIG or pass --kubeconfig/,
    },
    { args: ["render", "/nonexistent.yaml"], message: /cannot read \/nonexistent.yaml: ENOENT/ },
    { args: ["render"], message: /standard input is a terminal: name files with Tenants and Devices/ },
    {
      args: ["render", example("acme/devices.yaml")],
      message:
        /Device acme\/thermostat-lobby: no Tenant in the input owns namespace acme; pass its Tenant too/,
    },
  ])("refuses $args with exit code 2 and says what to do", async ({ args, message }) => {
    const result = await cli(args);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(message);
    expect(result.stdout).toBe("");
  });

  it("reads a setting from the environment when no flag names it, and a flag wins", async () => {
    const env = { BROKER_MTLS_PORT: "not-a-port" };
    expect((await cli(["verify"], { env })).stderr).toMatch(/BROKER_MTLS_PORT\) "not-a-port"/);
    // With a valid flag the bad environment value is not read; the next problem is the missing cluster.
    expect((await cli(["verify", "--broker-mtls-port", "8883"], { env })).stderr).toMatch(
      /no cluster configured/,
    );
  });

  it("renders what Tenants and their Devices become, from files or standard input", async () => {
    const files = [example("acme/tenant.yaml"), example("acme/devices.yaml")];
    const fromFiles = await cli(["render", ...files]);
    expect(fromFiles).toMatchObject({ code: 0, stderr: "" });
    const rendered = kinds(fromFiles.stdout);
    expect(rendered.filter((k) => k === "Namespace")).toHaveLength(2);
    expect(rendered).toEqual(
      expect.arrayContaining([
        "NetworkPolicy",
        "RoleBinding",
        "ResourceQuota",
        "Issuer",
        "Certificate",
        "Secret",
      ]),
    );
    expect(fromFiles.stdout).toContain("# broker grants of iot:acme:gateway-floor-3");
    expect(fromFiles.stdout).toContain("#   publish   tenants/acme/sites/hq/floors/3/+/telemetry");

    const { readFile } = await import("node:fs/promises");
    const stdin = (await Promise.all(files.map((f) => readFile(f, "utf8")))).join("\n---\n");
    const fromStdin = await cli(["render", "-"], { stdin });
    expect(fromStdin.stdout).toBe(fromFiles.stdout);
  });

  it("takes the settings render depends on as flags", async () => {
    const { stdout } = await cli([
      "render",
      "--operator-namespace",
      "platform-iot",
      example("acme/tenant.yaml"),
    ]);
    expect(stdout).toMatch(/kind: Issuer\nmetadata:\n {2}name: tenant-acme-ca\n {2}namespace: platform-iot/);
  });
});
