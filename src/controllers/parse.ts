import { type Device, deviceSchema } from "../api/device.js";
import { type Tenant, tenantSchema } from "../api/tenant.js";
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
