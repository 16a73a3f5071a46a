import { z } from "zod";
import type { CelRule } from "./openapi.js";

/** Everything the CRD generator needs to know about one kind; each kind's module exports one. */
export interface ResourceDefinition {
  readonly kind: string;
  readonly plural: string;
  readonly shortNames: readonly string[];
  readonly scope: "Cluster" | "Namespaced";
  readonly description: string;
  /** What makes a valid name of this kind; `kubectl explain <kind>.metadata.name` shows it. */
  readonly nameDescription: string;
  readonly spec: z.ZodType;
  readonly status: z.ZodType;
  /** Rules that need metadata.name or span spec and metadata; CEL sees the whole object as `self`. */
  readonly rootRules: readonly CelRule[];
  readonly printerColumns: readonly PrinterColumn[];
}

export interface PrinterColumn {
  readonly name: string;
  readonly type: "string" | "integer" | "boolean" | "date";
  readonly jsonPath: string;
  readonly description: string;
  readonly priority?: number;
}

export const readyColumn: PrinterColumn = {
  name: "Ready",
  type: "string",
  jsonPath: '.status.conditions[?(@.type=="Ready")].status',
  description: "Whether the Ready condition is True.",
};

/** Why the object is (not) Ready: what an operator on call reads first. */
export const reasonColumn: PrinterColumn = {
  name: "Reason",
  type: "string",
  jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
  description: "Reason of the Ready condition, e.g. Reconciled, DependencyNotReady, Quarantined, Disabled.",
};

export const ageColumn: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since the object was created.",
};

/** The part of ObjectMeta the operator reads; the rest passes through untouched. */
export function objectMetaSchema<Name extends z.ZodType<string>>(name: Name) {
  return z.looseObject({
    name,
    namespace: z.string().optional(),
    uid: z.string().optional(),
    generation: z.int().optional(),
    resourceVersion: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    deletionTimestamp: z.string().optional(),
    finalizers: z.array(z.string()).optional(),
  });
}
