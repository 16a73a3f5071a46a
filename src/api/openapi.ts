import { z } from "zod";

/** One CEL rule as the API server takes it in `x-kubernetes-validations`. */
export interface CelRule {
  readonly rule: string;
  readonly message: string;
  /** Relative to the schema node carrying the rule, e.g. `.renewBefore`; names the field in the error. */
  readonly fieldPath?: string;
}

/** The subset of a Kubernetes structural OpenAPI v3 schema that the API uses. */
export interface OpenApiSchema {
  type?: "object" | "array" | "string" | "integer" | "boolean";
  description?: string;
  format?: string;
  enum?: readonly string[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  default?: unknown;
  properties?: Record<string, OpenApiSchema>;
  required?: string[];
  items?: OpenApiSchema;
  additionalProperties?: OpenApiSchema;
  anyOf?: OpenApiSchema[];
  "x-kubernetes-int-or-string"?: true;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: string[];
  "x-kubernetes-validations"?: CelRule[];
}

/**
 * What zod cannot say about a field but the API server needs: CEL rules, list semantics and
 * schema keywords whose zod counterpart means something else (zod counts string length in UTF-16
 * units, the API server in code points).
 */
export interface KubeMeta {
  readonly validations?: readonly CelRule[];
  readonly listType?: "atomic" | "set" | "map";
  readonly listMapKeys?: readonly string[];
  readonly openApi?: Omit<OpenApiSchema, "x-kubernetes-validations" | "x-kubernetes-list-type">;
}

export const kubeRegistry = z.registry<KubeMeta>();

/** Attaches Kubernetes-only schema facts to a zod schema; returns the same schema. */
export function kube<T extends z.ZodType>(schema: T, meta: KubeMeta): T {
  kubeRegistry.add(schema, meta);
  return schema;
}

/** Converts a zod schema (of the kinds the API uses) into a structural OpenAPI v3 schema. */
export function toOpenApi(schema: z.ZodType): OpenApiSchema {
  const def = schema._zod.def;
  let result: OpenApiSchema;
  switch (def.type) {
    case "optional":
      result = toOpenApi((def as z.core.$ZodOptionalDef).innerType as z.ZodType);
      break;
    case "default":
    case "prefault": {
      const wrapped = def as z.core.$ZodDefaultDef;
      result = { ...toOpenApi(wrapped.innerType as z.ZodType), default: wrapped.defaultValue };
      break;
    }
    case "string":
      result = stringSchema(def as z.core.$ZodStringDef);
      break;
    case "number":
      result = numberSchema(def as z.core.$ZodNumberDef);
      break;
    case "boolean":
      result = { type: "boolean" };
      break;
    case "enum":
      result = { type: "string", enum: Object.values((def as z.core.$ZodEnumDef).entries).map(String) };
      break;
    case "array":
      result = arraySchema(def as z.core.$ZodArrayDef);
      break;
    case "object":
      result = objectSchema(def as z.core.$ZodObjectDef);
      break;
    case "record":
      result = {
        type: "object",
        additionalProperties: toOpenApi((def as z.core.$ZodRecordDef).valueType as z.ZodType),
      };
      break;
    case "union":
      result = intOrStringSchema(def as z.core.$ZodUnionDef);
      break;
    default:
      throw new Error(`no OpenAPI mapping for zod type "${def.type}"`);
  }
  return withMeta(schema, result);
}

function withMeta(schema: z.ZodType, result: OpenApiSchema): OpenApiSchema {
  const description = z.globalRegistry.get(schema)?.description;
  const meta = kubeRegistry.get(schema);
  // type, then description first: the generated YAML reads like `kubectl explain`.
  const merged: OpenApiSchema = { type: result.type, description, ...result, ...meta?.openApi };
  if (merged.type === undefined) delete merged.type;
  if (merged.description === undefined) delete merged.description;
  if (meta?.listType) merged["x-kubernetes-list-type"] = meta.listType;
  if (meta?.listMapKeys) merged["x-kubernetes-list-map-keys"] = [...meta.listMapKeys];
  if (meta?.validations) {
    merged["x-kubernetes-validations"] = [...(result["x-kubernetes-validations"] ?? []), ...meta.validations];
  }
  return merged;
}

function checkDefs(def: { checks?: z.core.$ZodCheck[] }): z.core.$ZodCheckDef[] {
  return (def.checks ?? []).map((check) => check._zod.def);
}

function stringSchema(def: z.core.$ZodStringDef): OpenApiSchema {
  const result: OpenApiSchema = { type: "string" };
  if ("format" in def && def.format === "datetime") result.format = "date-time";
  for (const check of checkDefs(def)) {
    if (check.check === "min_length") result.minLength = (check as z.core.$ZodCheckMinLengthDef).minimum;
    if (check.check === "max_length") result.maxLength = (check as z.core.$ZodCheckMaxLengthDef).maximum;
    if (check.check === "string_format") {
      const format = check as z.core.$ZodCheckRegexDef;
      if (format.format === "regex") result.pattern = format.pattern.source;
    }
  }
  return result;
}

function numberSchema(def: z.core.$ZodNumberDef): OpenApiSchema {
  const checks = checkDefs(def);
  const isInteger =
    ("format" in def && def.format === "safeint") || checks.some((check) => check.check === "number_format");
  if (!isInteger) throw new Error("the API has no floating-point fields; use z.int()");
  const result: OpenApiSchema = { type: "integer" };
  for (const check of checks) {
    if (check.check === "greater_than")
      result.minimum = (check as z.core.$ZodCheckGreaterThanDef).value as number;
    if (check.check === "less_than") result.maximum = (check as z.core.$ZodCheckLessThanDef).value as number;
  }
  return result;
}

function arraySchema(def: z.core.$ZodArrayDef): OpenApiSchema {
  const result: OpenApiSchema = { type: "array", items: toOpenApi(def.element as z.ZodType) };
  for (const check of checkDefs(def)) {
    if (check.check === "min_length") result.minItems = (check as z.core.$ZodCheckMinLengthDef).minimum;
    if (check.check === "max_length") result.maxItems = (check as z.core.$ZodCheckMaxLengthDef).maximum;
  }
  return result;
}

function objectSchema(def: z.core.$ZodObjectDef): OpenApiSchema {
  const properties: Record<string, OpenApiSchema> = {};
  const required: string[] = [];
  for (const [name, field] of Object.entries(def.shape)) {
    properties[name] = toOpenApi(field as z.ZodType);
    if (!["optional", "default", "prefault"].includes(field._zod.def.type)) required.push(name);
  }
  return required.length > 0 ? { type: "object", properties, required } : { type: "object", properties };
}

/** Kubernetes quantities are "int or string"; that is the only union the API has. */
function intOrStringSchema(def: z.core.$ZodUnionDef): OpenApiSchema {
  const types = def.options.map((option) => option._zod.def.type).sort();
  if (types.join() !== "number,string") throw new Error(`unsupported union of ${types.join(", ")}`);
  const stringOption = def.options.find((option) => option._zod.def.type === "string") as z.ZodType;
  const { pattern } = stringSchema(stringOption._zod.def as z.core.$ZodStringDef);
  return {
    anyOf: [{ type: "integer" }, { type: "string" }],
    ...(pattern === undefined ? {} : { pattern }),
    "x-kubernetes-int-or-string": true,
  };
}
