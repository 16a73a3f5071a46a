import { createPublicKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { formatVerifyResult, verifyAuditLog } from "./chain.js";

export const AUDIT_VERIFY_USAGE = "audit verify FILE [--public-key PEM]";

/**
 * `iot-tenant-operator audit verify FILE [--public-key PEM]`: prints OK or the first removed,
 * reordered or edited record; exit code 0 or 1 (2 for a usage error). The key pins the checkpoint
 * signer (the `public.pem` of the operator's audit Secret).
 */
export async function auditVerifyCommand(
  args: readonly string[],
  print: (text: string) => void,
): Promise<number> {
  const [subcommand, file, ...options] = args;
  const keyIndex = options.indexOf("--public-key");
  const keyFile = keyIndex === -1 ? undefined : options[keyIndex + 1];
  if (subcommand !== "verify" || !file || (keyIndex !== -1 && !keyFile)) {
    print(`usage: iot-tenant-operator ${AUDIT_VERIFY_USAGE}`);
    return 2;
  }
  const trustedKey = keyFile ? createPublicKey(await readFile(keyFile, "utf8")) : undefined;
  const result = verifyAuditLog(await readFile(file, "utf8"), trustedKey);
  print(formatVerifyResult(file, result));
  return result.ok ? 0 : 1;
}
