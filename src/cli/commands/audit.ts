import { createPublicKey } from "node:crypto";
import { Command } from "commander";
import { formatVerifyResult, verifyAuditLog } from "../../audit/chain.js";
import { CheckFailed, type CommandFactory, readInput } from "../io.js";

export const auditCommand: CommandFactory = (io) =>
  new Command("audit").description("check the operator's audit trail").addCommand(
    new Command("verify")
      .description(
        "check an audit file: OK, or the first removed, reordered or edited record and a failed checkpoint signature (exit 1)",
      )
      .argument("<file>", "the audit trail (JSON lines); '-': standard input")
      .option(
        "--public-key <pem>",
        "pin the checkpoint signer: the public.pem of the operator's audit Secret (without it, the key in the file is trusted)",
      )
      .action(async (file: string, flags: { publicKey?: string }) => {
        const hint = "pipe the audit file in, or name it";
        const trustedKey = flags.publicKey
          ? createPublicKey(await readInput(io, flags.publicKey, hint))
          : undefined;
        const result = verifyAuditLog(await readInput(io, file, hint), trustedKey);
        io.stdout.write(`${formatVerifyResult(file, result)}\n`);
        if (!result.ok) throw new CheckFailed("the audit trail was changed; see the line above");
      }),
  );
