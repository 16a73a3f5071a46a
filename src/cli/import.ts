import { Resource } from "../controllers/resources.js";
import { errorMessage } from "../runtime/errors.js";
import { KubeApiError, type KubeClient } from "../runtime/kube-client.js";
import type { DeviceRow, RowProblem } from "./device-csv.js";
import type { Progress } from "./progress.js";

/** The field manager of imported Devices: a re-run owns the same fields, so it changes nothing. */
export const IMPORT_FIELD_MANAGER = "iot-tenant-operator-import";

export interface ImportOptions {
  /** The API server validates and admits each Device but stores nothing. */
  readonly dryRun: boolean;
  /** Take over fields another manager (e.g. kubectl) set, instead of refusing the row. */
  readonly forceConflicts: boolean;
  /** Requests in flight at once. */
  readonly concurrency: number;
  readonly progress?: Progress;
}

/** What the API server said no to, in the words that tell the person what to change. */
function refusal(error: unknown): string {
  if (error instanceof KubeApiError) {
    const hint = error.code === 409 ? " (pass --force-conflicts to take the fields over)" : "";
    return `${error.code} ${error.reason}: ${error.detail}${hint}`;
  }
  return errorMessage(error);
}

/**
 * Server-side applies each row's Device, `concurrency` at a time; a refused row is reported with its
 * line and the others go on. Returns the rows the API server refused.
 */
export async function applyDeviceRows(
  client: KubeClient,
  rows: readonly DeviceRow[],
  options: ImportOptions,
): Promise<RowProblem[]> {
  const problems: RowProblem[] = [];
  let next = 0;
  const worker = async () => {
    for (let row = rows[next++]; row; row = rows[next++]) {
      try {
        await client.applyAs(Resource.device, row.device, {
          force: options.forceConflicts,
          dryRun: options.dryRun,
        });
        options.progress?.advance(false);
      } catch (error) {
        problems.push({ line: row.line, reason: refusal(error) });
        options.progress?.advance(true);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, rows.length)) }, worker));
  return problems.sort((a, b) => a.line - b.line);
}
