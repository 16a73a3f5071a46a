import { z } from "zod";

/** Enough of ObjectMeta for the runtime; everything else passes through untouched. */
export const objectMetaSchema = z.looseObject({
  name: z.string(),
  namespace: z.string().optional(),
  uid: z.string(),
  resourceVersion: z.string(),
  generation: z.number().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  deletionTimestamp: z.string().optional(),
  finalizers: z.array(z.string()).optional(),
  ownerReferences: z
    .array(
      z.looseObject({
        apiVersion: z.string(),
        kind: z.string(),
        name: z.string(),
        uid: z.string(),
        controller: z.boolean().optional(),
      }),
    )
    .optional(),
  managedFields: z.array(z.unknown()).optional(),
});

export const kubeObjectSchema = z.looseObject({
  apiVersion: z.string().optional(),
  kind: z.string().optional(),
  metadata: objectMetaSchema,
});

/** Any object read from the API server. */
export type KubeObject = z.infer<typeof kubeObjectSchema>;

/** A kind the runtime reads or writes; given explicitly so no discovery round trip is needed. */
export interface ResourceType {
  readonly apiVersion: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
  /**
   * What the informers keep of each object of this kind (client-go's SetTransform), and so the form
   * in which an intent is compared with the cache before it is applied (apply.ts). It must keep
   * metadata as it is; absent, an object is kept whole (but for managedFields).
   */
  readonly cacheForm?: (object: KubeObject) => KubeObject;
}

export function resourcePath(
  resource: ResourceType,
  target: { readonly namespace?: string; readonly name?: string; readonly subresource?: string } = {},
): string {
  const base = resource.apiVersion.includes("/")
    ? `/apis/${resource.apiVersion}`
    : `/api/${resource.apiVersion}`;
  const namespace =
    resource.namespaced && target.namespace ? `/namespaces/${encodeURIComponent(target.namespace)}` : "";
  const name = target.name ? `/${encodeURIComponent(target.name)}` : "";
  const subresource = target.name && target.subresource ? `/${target.subresource}` : "";
  return `${base}${namespace}/${resource.plural}${name}${subresource}`;
}

export function groupOf(apiVersion: string): string {
  return apiVersion.includes("/") ? (apiVersion.split("/")[0] ?? "") : "";
}

/** `namespace/name`, or `name` for cluster-scoped objects: the queue key of an object. */
export function objectKey(target: {
  readonly namespace?: string | undefined;
  readonly name: string;
}): string {
  return target.namespace ? `${target.namespace}/${target.name}` : target.name;
}

export function parseObjectKey(key: string): { namespace?: string; name: string } {
  const slash = key.indexOf("/");
  return slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** A controller owner reference pointing at `owner`, for children the garbage collector should clean up. */
export function controllerReference(owner: KubeObject & { apiVersion: string; kind: string }) {
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}
