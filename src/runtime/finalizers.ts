import type { KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./kube-object.js";

/**
 * Adds `finalizer` to the object as cached. A patch, never an apply: an apply would create the object
 * again if it was deleted since the cache saw it. Optimistic on resourceVersion, so another's finalizer
 * added meanwhile is never dropped (the 409 retries). No request when it is already there.
 */
export async function ensureFinalizer(
  client: KubeClient,
  resource: ResourceType,
  object: KubeObject,
  finalizer: string,
  signal?: AbortSignal,
): Promise<void> {
  const finalizers = object.metadata.finalizers ?? [];
  if (finalizers.includes(finalizer)) return;
  await client.mergePatch(
    resource,
    object.metadata,
    {
      metadata: { resourceVersion: object.metadata.resourceVersion, finalizers: [...finalizers, finalizer] },
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
