import { Command, InvalidArgumentError, Option } from "commander";
import { parseTenant } from "../../api/tenant.js";
import { Resource } from "../../controllers/resources.js";
import { tenantNamespaces } from "../../desired/tenant.js";
import { KubeClient } from "../../runtime/kube-client.js";
import { CsvFileError, DEVICE_CSV_COLUMNS, parseDeviceCsv } from "../device-csv.js";
import { applyDeviceRows, IMPORT_FIELD_MANAGER } from "../import.js";
import { CheckFailed, type CliIo, type CommandFactory, readInput } from "../io.js";
import { progress } from "../progress.js";
import { clusterConfig, resolveSettings, settingOptions } from "../settings.js";

const MAX_CONCURRENCY = 256;

function concurrency(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > MAX_CONCURRENCY)
    throw new InvalidArgumentError(`must be a whole number from 1 to ${MAX_CONCURRENCY}`);
  return value;
}

const FORMAT = `
The file's first row names the columns, in any order:
${Object.entries(DEVICE_CSV_COLUMNS)
  .map(([column, description]) => `  ${column.padEnd(15)}${description}`)
  .join("\n")}

Example:
  name,authentication,enabled,publish,subscribe
  thermostat-1,x509,true,,
  gateway-3,x509,true,devices/gateway-3/# sites/hq/+/telemetry,devices/gateway-3/#
  meter-7,password,false,,

Each Device is server-side applied (field manager iot-tenant-operator-import): a re-run changes
nothing, a changed row updates its Device. A refused row is reported with its line number and the
others go on; the exit code is 1 if any row was refused.`;

const importCommand = (io: CliIo) => {
  const command = new Command("import")
    .description("create or update a tenant's Devices from a CSV file")
    .argument("<file>", "CSV file with a header row; '-': standard input")
    .addOption(new Option("--tenant <name>", "the Tenant the Devices belong to").makeOptionMandatory())
    .option("--dry-run", "send every Device through the API server's validation and admission, store nothing")
    .option(
      "--force-conflicts",
      "take over fields another manager set (e.g. by kubectl) instead of refusing the row",
    )
    .option("--concurrency <n>", `requests in flight at once (1-${MAX_CONCURRENCY})`, concurrency, 16)
    .addHelpText("after", FORMAT)
    .action(async (file: string, flags: ImportFlags) => {
      const settings = resolveSettings(["KUBECONFIG"], flags as unknown as Record<string, unknown>, io.env);
      const client = new KubeClient(await clusterConfig(settings, io.env), {
        fieldManager: IMPORT_FIELD_MANAGER,
      });
      const text = await readInput(
        io,
        file,
        "name the file, or pipe it in: devices import --tenant T - < devices.csv",
      );
      const live = await client.get(Resource.tenant, { name: flags.tenant });
      if (!live)
        throw new CheckFailed(
          `tenant ${flags.tenant} not found: create the Tenant first (kubectl get tenants lists them)`,
        );
      const tenant = parseTenant(live);
      let parsed: ReturnType<typeof parseDeviceCsv>;
      try {
        parsed = parseDeviceCsv(text, { name: tenant.metadata.name, namespaces: tenantNamespaces(tenant) });
      } catch (error) {
        if (error instanceof CsvFileError)
          throw new CheckFailed(`${file}: ${error.message}; nothing was imported`);
        throw error;
      }
      const bar = progress(io.stderr, flags.dryRun ? "checking" : "importing", parsed.rows.length);
      const refused = await applyDeviceRows(client, parsed.rows, {
        dryRun: flags.dryRun === true,
        forceConflicts: flags.forceConflicts === true,
        concurrency: flags.concurrency,
        progress: bar,
      });
      bar.finish();
      const problems = [...parsed.problems, ...refused].sort((a, b) => a.line - b.line);
      for (const problem of problems) io.stderr.write(`${file}:${problem.line}: ${problem.reason}\n`);
      const applied = parsed.rows.length - refused.length;
      io.stdout.write(
        flags.dryRun
          ? `dry run: the API server accepted ${applied} Device(s) for tenant ${flags.tenant} and stored nothing\n`
          : `applied ${applied} Device(s) to tenant ${flags.tenant}\n`,
      );
      if (problems.length) throw new CheckFailed(`${problems.length} row(s) refused; see the lines above`);
    });
  for (const option of settingOptions(["KUBECONFIG"])) command.addOption(option);
  return command;
};

interface ImportFlags {
  tenant: string;
  dryRun?: boolean;
  forceConflicts?: boolean;
  concurrency: number;
}

export const devicesCommand: CommandFactory = (io) =>
  new Command("devices").description("manage a tenant's Devices in bulk").addCommand(importCommand(io));
