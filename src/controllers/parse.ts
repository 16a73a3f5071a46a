import { z } from "zod";
import { type Device, deviceSchema } from "../api/device.js";
import { type Tenant, tenantSchema } from "../api/tenant.js";
import type { NamespacesNamed, TenantRootView } from "../desired/tenant.js";
import { TerminalError } from "../runtime/errors.js";
import { type KubeObject, objectKey } from "../runtime/kube-object.js";

/** A cached object parsed with the API's own schema (defaults applied); its metadata kept whole. */
export type Parsed<T> = T & { metadata: KubeObject["metadata"] };

function parseWith<T>(
  schema: {
    safeParse(
      value: unknown,
    ): { success: true; data: T } | { success: false; error: { issues: Array<{ message: string }> } };
  },
  kind: string,
  object: KubeObject,
): Parsed<T> {
  const parsed = schema.safeParse(object);
  if (!parsed.success) {
    // The CRD's validation should make this impossible; only a change of the object can help.
    throw new TerminalError(
      `invalid ${kind} ${objectKey(object.metadata)}: ${parsed.error.issues[0]?.message}`,
      {
        reason: "InvalidSpec",
      },
    );
  }
  return { ...parsed.data, metadata: object.metadata };
}

export function parseTenantObject(object: KubeObject): Parsed<Tenant> {
  return parseWith<Tenant>(tenantSchema, "Tenant", object);
}

export function parseDeviceObject(object: KubeObject): Parsed<Device> {
  return parseWith<Device>(deviceSchema, "Device", object);
}

const placementOnly = z.object({
  spec: z
    .object({
      namespaces: z.array(z.string()).optional(),
      network: z.object({ allowFromNamespaces: z.array(z.string()).optional() }).optional(),
      admins: z.array(z.object({ namespace: z.string().optional() })).optional(),
      broker: z.object({ topicRoot: z.string().optional() }).optional(),
    })
    .optional(),
});

/** Where a tenant lives (its namespaces and its topic root) and which other namespaces it names. */
export interface TenantPlacement extends TenantRootView {
  spec: TenantRootView["spec"] &
    NamespacesNamed["spec"] & {
      network: NonNullable<NamespacesNamed["spec"]["network"]>;
    };
}

/**
 * Just the fields that event mapping and the topic-root overlap check need from a cached Tenant.
 * They run against every tenant on every event, so they read two fields instead of parsing each
 * Tenant whole.
 */
export function tenantPlacement(object: KubeObject): TenantPlacement {
  const spec = placementOnly.safeParse(object).data?.spec;
  const topicRoot = spec?.broker?.topicRoot;
  return {
    metadata: object.metadata,
    spec: {
      namespaces: spec?.namespaces,
      network: { allowFromNamespaces: spec?.network?.allowFromNamespaces },
      admins: spec?.admins,
      broker: topicRoot === undefined ? {} : { topicRoot },
    },
  };
}
