import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { stackVariables } from "../../test/harness/stack.js";
import { cli } from "../../test/support/cli.js";
import { uniqueName } from "../../test/support/kube.js";
import { kubectl, notFound } from "../../test/support/kubectl.js";
import { applyDevice, applyReadyTenant, startTestOperator } from "../../test/support/operator.js";
import type { RunningOperator } from "../operator.js";
import { IMPORT_FIELD_MANAGER } from "./import.js";

const HEADER = "name,namespace,authentication,enabled,publish,subscribe";

async function csvFile(lines: readonly string[]): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), "iot-import-")), "devices.csv");
  await writeFile(file, `${lines.join("\n")}\n`);
  return file;
}

const importDevices = (tenant: string, file: string, ...flags: string[]) =>
  cli(["devices", "import", "--tenant", tenant, ...flags, file], { env: stackVariables(inject("stack")) });

interface LiveDevice {
  generation: number;
  /** When the import's field manager last changed the Device. */
  importedAt: string | undefined;
  spec: Record<string, unknown>;
}

async function devices(namespace: string): Promise<Record<string, LiveDevice>> {
  const result = await kubectl(["get", "devices", "-n", namespace, "-o", "json", "--show-managed-fields"]);
  const { items } = JSON.parse(result.stdout) as {
    items: Array<{
      metadata: { name: string; generation: number; managedFields: Array<{ manager: string; time: string }> };
      spec: Record<string, unknown>;
    }>;
  };
  return Object.fromEntries(
    items.map((d) => [
      d.metadata.name,
      {
        generation: d.metadata.generation,
        importedAt: d.metadata.managedFields.find((f) => f.manager === IMPORT_FIELD_MANAGER)?.time,
        spec: d.spec,
      },
    ]),
  );
}

describe("devices import", () => {
  let operator: RunningOperator;
  beforeAll(async () => {
    operator = await startTestOperator();
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("applies every good row, reports each bad row with its line and reason, and a re-run changes nothing", async () => {
    const tenant = uniqueName("import");
    await applyReadyTenant(tenant);
    const file = await csvFile([
      HEADER,
      "sensor-1,,x509,true,,",
      "sensor-2,,password,false,,",
      "Bad_Name,,x509,true,,",
      `gw-3,${tenant},x509,true,devices/gw-3/# sites/+/telemetry,devices/gw-3/#`,
      "sensor-4,globex,x509,true,,",
    ]);

    const first = await importDevices(tenant, file);
    expect(first.code).toBe(1);
    expect(first.stdout).toBe(`applied 3 Device(s) to tenant ${tenant}\n`);
    expect(first.stderr).toMatch(new RegExp(`${file}:4: metadata.name: `));
    expect(first.stderr).toContain(
      `${file}:6: namespace globex is not one of tenant ${tenant}'s namespaces (${tenant})`,
    );
    const applied = await devices(tenant);
    expect(Object.keys(applied).sort()).toEqual(["gw-3", "sensor-1", "sensor-2"]);
    expect(applied["sensor-2"]?.spec).toMatchObject({ enabled: false, authentication: { type: "password" } });
    expect(applied["gw-3"]?.spec).toMatchObject({
      topics: { publish: ["devices/gw-3/#", "sites/+/telemetry"], subscribe: ["devices/gw-3/#"] },
    });

    // Idempotent: the same file again changes no Device (the operator's status writes aside).
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // managedFields times have one-second resolution
    const again = await importDevices(tenant, file);
    expect(again.stdout).toBe(first.stdout);
    const unchanged = await devices(tenant);
    for (const name of Object.keys(applied)) {
      expect(applied[name]?.importedAt).toBeDefined();
      expect(unchanged[name]?.generation).toBe(applied[name]?.generation);
      expect(unchanged[name]?.importedAt).toBe(applied[name]?.importedAt);
    }
  });

  it("--dry-run has the API server check every row and stores nothing", async () => {
    const tenant = uniqueName("dryrun");
    await applyReadyTenant(tenant);
    // A Device that exists as x509: changing its authentication is refused by the CRD's own rule,
    // which only the API server knows the old value for.
    await applyDevice(tenant, "existing", { authentication: { type: "x509" } });
    const file = await csvFile([
      HEADER,
      "fresh-1,,x509,true,,",
      "existing,,password,true,,",
      "fresh-2,,password,true,,",
    ]);

    // The Device's fields are the platform team's: the import says so rather than take them.
    const conflict = await importDevices(tenant, file, "--dry-run");
    expect(conflict.stderr).toContain(
      `${file}:3: 409 Conflict: Apply failed with 1 conflict: conflict with "platform-team": .spec.authentication.type (pass --force-conflicts to take the fields over)`,
    );
    // With --force-conflicts it takes them over, and the CRD's own rule refuses the change.
    const result = await importDevices(tenant, file, "--dry-run", "--force-conflicts");
    expect(result.code).toBe(1);
    expect(result.stdout).toBe(
      `dry run: the API server accepted 2 Device(s) for tenant ${tenant} and stored nothing\n`,
    );
    expect(result.stderr).toMatch(
      new RegExp(`${file}:3: 422 Invalid: .*spec.authentication.type is immutable`),
    );
    expect(await notFound(["device", "fresh-1", "-n", tenant])).toBe(true);
    expect(await notFound(["device", "fresh-2", "-n", tenant])).toBe(true);
    expect((await devices(tenant)).existing?.spec).toMatchObject({ authentication: { type: "x509" } });

    // Positive twin: without --dry-run the same good rows are stored.
    const stored = await importDevices(
      tenant,
      await csvFile([HEADER, "fresh-1,,x509,true,,", "fresh-2,,password,true,,"]),
    );
    expect(stored).toMatchObject({ code: 0, stderr: expect.stringMatching(/^importing .*2\/2/) });
    expect(Object.keys(await devices(tenant)).sort()).toEqual(["existing", "fresh-1", "fresh-2"]);
  });

  it("says when the tenant does not exist, and imports nothing", async () => {
    const file = await csvFile([HEADER, "sensor-1,,x509,true,,"]);
    const result = await importDevices(uniqueName("absent"), file);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/tenant absent-\w+ not found: create the Tenant first/);
  });
});
