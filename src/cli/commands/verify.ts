import { Command } from "commander";
import { brokerAdminConnection } from "../../operator.js";
import { KubeClient } from "../../runtime/kube-client.js";
import { PROBE_LABEL } from "../../verify/broker-checks.js";
import { formatChecks, verifyIsolation } from "../../verify/isolation.js";
import { CheckFailed, type CommandFactory } from "../io.js";
import {
  ALL_SETTINGS,
  clusterConfig,
  environmentOnlyHelp,
  operatorConfig,
  resolveSettings,
  settingOptions,
} from "../settings.js";

export const verifyCommand: CommandFactory = (io) => {
  const command = new Command("verify")
    .description(
      "check on the live cluster and broker that no tenant can reach another (exit 1 if one can); SKIP marks " +
        `a check that could not run, and why; the broker is probed with Devices labelled ${PROBE_LABEL}=true`,
    )
    .argument("[tenant...]", "tenants to check (default: all)")
    .option("--json", "print the checks as JSON instead of a table")
    .action(async (tenants: string[], flags: Record<string, unknown>) => {
      const settings = resolveSettings(ALL_SETTINGS, flags, io.env);
      const config = operatorConfig(settings);
      const checks = await verifyIsolation(new KubeClient(await clusterConfig(settings, io.env)), {
        config,
        broker: {
          host: config.BROKER_HOST,
          mtlsPort: config.BROKER_MTLS_PORT,
          adminUsername: config.BROKER_ADMIN_USERNAME,
          // Without the admin's certificate the checks that need the admin API report SKIP.
          ...(config.BROKER_ADMIN_CERT_FILE ? { admin: brokerAdminConnection(config) } : {}),
        },
        ...(tenants.length ? { tenants } : {}),
      });
      io.stdout.write(flags.json ? `${JSON.stringify(checks, null, 2)}\n` : `${formatChecks(checks)}\n`);
      const failed = checks.filter((c) => c.result === "FAIL").length;
      if (failed) throw new CheckFailed(`${failed} isolation check(s) failed; see the FAIL rows above`);
    });
  for (const option of settingOptions(ALL_SETTINGS)) command.addOption(option);
  return command.addHelpText("after", environmentOnlyHelp(ALL_SETTINGS));
};
