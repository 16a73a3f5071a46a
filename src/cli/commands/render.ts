import { Command } from "commander";
import { parseAllDocuments } from "yaml";
import { type CommandFactory, readInput } from "../io.js";
import { render } from "../render.js";
import { operatorConfig, resolveSettings, type SettingName, settingOptions } from "../settings.js";

/** What the desired state depends on besides the manifests. */
const RENDER_SETTINGS: readonly SettingName[] = [
  "OPERATOR_NAMESPACE",
  "ROOT_CA_SECRET",
  "BROKER_NAMESPACE",
  "BROKER_POD_PORTS",
  "DNS_NAMESPACE",
  "DNS_POD_LABEL",
];

export const renderCommand: CommandFactory = (io) => {
  const command = new Command("render")
    .description(
      "print what the operator creates for Tenants and Devices (namespaces, policies, RBAC, quota, CA, device " +
        "Certificates and Secrets, broker grants as comments), without a cluster",
    )
    .argument("[file...]", "multi-document YAML with Tenants and Devices; none or '-': standard input")
    .action(async (files: string[], flags: Record<string, unknown>) => {
      const config = operatorConfig(resolveSettings(RENDER_SETTINGS, flags, io.env));
      const texts = await Promise.all(
        (files.length ? files : ["-"]).map((file) =>
          readInput(
            io,
            file,
            "name files with Tenants and Devices, or pipe them in: render - < manifests.yaml",
          ),
        ),
      );
      const documents = texts.flatMap((text) => parseAllDocuments(text)).map((doc) => doc.toJS());
      io.stdout.write(render(documents, config));
    });
  for (const option of settingOptions(RENDER_SETTINGS)) command.addOption(option);
  return command;
};
