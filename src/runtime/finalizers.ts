import type { KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./kube-object.js";

/**
 * Adds `finalizer` by server-side apply: the field manager owns just that list entry, so other
 * controllers' finalizers stay. No request when it is already there.
 */
export async function ensureFinalizer(
  client: KubeClient,
  resource: ResourceType,
  object: KubeObject,
  finalizer: string,
  signal?: AbortSignal,
): Promise<void> {
  if (object.metadata.finalizers?.includes(finalizer)) return;
  const { name, namespace } = object.metadata;
  await client.apply(
    resource,
    {
      apiVersion: resource.apiVersion,
      kind: resource.kind,
      metadata: { name, ...(namespace ? { namespace } : {}), finalizers: [finalizer] },
    },
    signal,
  );
}

/**
 * Removes `finalizer` once its cleanup is done. Optimistic on resourceVersion: if the object
 * changed since it was read, the 409 retries the whole cleanup rather than drop another's finalizer.
 */
export async function removeFinalizer(
  client: KubeClient,
  resource: ResourceType,
  object: KubeObject,
  finalizer: string,
  signal?: AbortSignal,
): Promise<void> {
  const finalizers = object.metadata.finalizers ?? [];
  if (!finalizers.includes(finalizer)) return;
  await client.mergePatch(
    resource,
    object.metadata,
    {
      metadata: {
        resourceVersion: object.metadata.resourceVersion,
        finalizers: finalizers.filter((f) => f !== finalizer),
      },
    },
    signal,
  );
}
