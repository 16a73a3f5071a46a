import { Command } from "commander";
import { createLogger } from "../../observability/logger.js";
import { startOperator } from "../../operator.js";
import type { CommandFactory } from "../io.js";
import {
  ALL_SETTINGS,
  clusterConfig,
  environmentOnlyHelp,
  operatorConfig,
  resolveSettings,
  settingOptions,
} from "../settings.js";

export const runCommand: CommandFactory = (io) => {
  const command = new Command("run")
    .description(
      "start the operator against the cluster, with the broker settings from flags or the environment",
    )
    .action(async (flags: Record<string, unknown>) => {
      const settings = resolveSettings(ALL_SETTINGS, flags, io.env);
      const operator = await startOperator({
        kubeConfig: await clusterConfig(settings, io.env),
        config: operatorConfig(settings),
        logger: createLogger({ level: settings.LOG_LEVEL }),
      });
      operator.manager.stopOnSignals();
      await operator.done;
    });
  for (const option of settingOptions(ALL_SETTINGS)) command.addOption(option);
  return command.addHelpText("after", environmentOnlyHelp(ALL_SETTINGS));
};
