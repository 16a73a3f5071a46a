import { parse } from "csv-parse/sync";
import { AuthenticationType, deviceSchema } from "../api/device.js";
import { API_VERSION } from "../api/group.js";
import type { ApplyIntent } from "../runtime/kube-client.js";

/**
 * The spreadsheet format of `devices import`: a header row naming the columns, one Device a row.
 * Each row becomes the Device manifest a person would write, checked by the same zod schema the CRD
 * is generated from, so a row refused here would be refused by the API server too.
 */
export const DEVICE_CSV_COLUMNS = {
  name: "the Device's name (a DNS label, unique across the tenant's namespaces); required",
  namespace: "one of the tenant's namespaces; empty: the tenant's first namespace",
  authentication: "x509 or password; empty: x509",
  enabled: "true or false; empty: true",
  publish:
    "topic filters the device may publish to, relative to the tenant's topic root, separated by spaces",
  subscribe: "topic filters the device may subscribe to, separated by spaces",
} as const;
type Column = keyof typeof DEVICE_CSV_COLUMNS;
const REQUIRED: readonly Column[] = ["name", "authentication", "enabled"];
const COLUMN_NAMES = Object.keys(DEVICE_CSV_COLUMNS) as Column[];

/** The tenant the rows are imported into. */
export interface ImportTenant {
  readonly name: string;
  readonly namespaces: readonly string[];
}

export interface DeviceRow {
  /** Line in the file where the row ends (a quoted field may span lines). */
  readonly line: number;
  readonly device: ApplyIntent;
}

export interface RowProblem {
  readonly line: number;
  readonly reason: string;
}

export interface ParsedCsv {
  readonly rows: DeviceRow[];
  readonly problems: RowProblem[];
}

/** The file cannot be read as a whole (no header, a missing column, broken quoting): nothing is imported. */
export class CsvFileError extends Error {
  override name = "CsvFileError";
}

const BOOLEANS: Readonly<Record<string, boolean>> = { "": true, true: true, false: false };

function columnIndexes(header: readonly string[]): Map<Column, number> {
  const normalized = header.map((h) => h.trim().toLowerCase());
  const unknown = normalized.filter((h) => !(COLUMN_NAMES as string[]).includes(h));
  if (unknown.length)
    throw new CsvFileError(
      `line 1: unknown column(s) ${unknown.join(", ")}; the columns are ${COLUMN_NAMES.join(", ")}`,
    );
  const duplicate = normalized.find((h, i) => normalized.indexOf(h) !== i);
  if (duplicate) throw new CsvFileError(`line 1: column ${duplicate} appears twice`);
  const missing = REQUIRED.filter((c) => !normalized.includes(c));
  if (missing.length)
    throw new CsvFileError(
      `line 1: the header row lacks column(s) ${missing.join(", ")}; it must name at least ${REQUIRED.join(", ")}`,
    );
  return new Map(normalized.map((h, i) => [h as Column, i]));
}

const filters = (text: string) => text.split(/\s+/).filter(Boolean);

/** One row's Device manifest, or why it cannot be one. */
export function deviceOfRow(
  fields: Readonly<Partial<Record<Column, string>>>,
  tenant: ImportTenant,
): { device: ApplyIntent } | { reason: string } {
  const name = fields.name ?? "";
  const namespace = fields.namespace || tenant.namespaces[0] || tenant.name;
  if (!tenant.namespaces.includes(namespace))
    return {
      reason: `namespace ${namespace} is not one of tenant ${tenant.name}'s namespaces (${tenant.namespaces.join(", ")})`,
    };
  const enabled = BOOLEANS[(fields.enabled ?? "").toLowerCase()];
  if (enabled === undefined)
    return { reason: `enabled: ${JSON.stringify(fields.enabled)} is not true or false` };
  const authentication = (fields.authentication || AuthenticationType.X509).toLowerCase();
  const publish = filters(fields.publish ?? "");
  const subscribe = filters(fields.subscribe ?? "");
  const device: ApplyIntent = {
    apiVersion: API_VERSION,
    kind: "Device",
    metadata: { name, namespace },
    spec: {
      enabled,
      authentication: { type: authentication },
      ...(publish.length || subscribe.length ? { topics: { publish, subscribe } } : {}),
    },
  };
  const parsed = deviceSchema.safeParse(device);
  if (parsed.success) return { device };
  return {
    reason: parsed.error.issues
      .map((issue) => `${issue.path.length ? `${issue.path.join(".")}: ` : ""}${issue.message}`)
      .join("; "),
  };
}

/** Every row of a CSV file: the Devices to apply, and each refused row with its line and reason. */
export function parseDeviceCsv(text: string, tenant: ImportTenant): ParsedCsv {
  let records: Array<{ record: string[]; info: { lines: number } }>;
  try {
    // With info: true each record comes with its position; the library's types do not say so.
    records = parse(text, {
      info: true,
      relax_column_count: true,
      skip_empty_lines: true,
      trim: true,
      bom: true,
    }) as unknown as typeof records;
  } catch (error) {
    throw new CsvFileError(error instanceof Error ? error.message : String(error));
  }
  const [header, ...body] = records;
  if (!header)
    throw new CsvFileError(`the file is empty; its first row names the columns ${COLUMN_NAMES.join(", ")}`);
  const columns = columnIndexes(header.record);
  const rows: DeviceRow[] = [];
  const problems: RowProblem[] = [];
  const lineOfName = new Map<string, number>();
  for (const { record, info } of body) {
    const line = info.lines;
    if (record.length !== header.record.length) {
      problems.push({ line, reason: `${record.length} fields, the header has ${header.record.length}` });
      continue;
    }
    const fields = Object.fromEntries([...columns].map(([column, index]) => [column, record[index] ?? ""]));
    const result = deviceOfRow(fields, tenant);
    if ("reason" in result) {
      problems.push({ line, reason: result.reason });
      continue;
    }
    const name = result.device.metadata.name;
    const earlier = lineOfName.get(name);
    if (earlier !== undefined) {
      problems.push({ line, reason: `device ${name} is already on line ${earlier}` });
      continue;
    }
    lineOfName.set(name, line);
    rows.push({ line, device: result.device });
  }
  return { rows, problems };
}
