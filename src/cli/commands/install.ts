import { Command } from "commander";
import { install } from "../../install.js";
import { KubeClient } from "../../runtime/kube-client.js";
import type { CommandFactory } from "../io.js";
import {
  ALL_SETTINGS,
  clusterConfig,
  environmentOnlyHelp,
  operatorConfig,
  resolveSettings,
  settingOptions,
} from "../settings.js";

export const installCommand: CommandFactory = (io) => {
  const command = new Command("install")
    .description(
      "apply the CRDs, the operator namespace, the tenant-admin ClusterRole and the admission policy",
    )
    .action(async (flags: Record<string, unknown>) => {
      const settings = resolveSettings(ALL_SETTINGS, flags, io.env);
      await install(
        new KubeClient(await clusterConfig(settings, io.env)),
        operatorConfig(settings),
        (object) => io.stdout.write(`applied ${object.kind} ${object.metadata.name}\n`),
      );
    });
  for (const option of settingOptions(ALL_SETTINGS)) command.addOption(option);
  return command.addHelpText("after", environmentOnlyHelp(ALL_SETTINGS));
};
