import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { ApplyIntent, KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./kube-object.js";

/**
 * Digest of the last intent we applied. Comparing values alone cannot see a field we stopped
 * setting (server-side apply removes it, a value comparison says "nothing to do"), so a changed
 * intent is detected by its digest and drift by the value comparison.
 */
export const APPLIED_DIGEST_ANNOTATION = "iot.tenant-operator.io/applied-digest";

/** Whether every field in `intent` has the same value in `observed`; arrays must match exactly. */
export function isContainedIn(intent: unknown, observed: unknown): boolean {
  if (Array.isArray(intent) || typeof intent !== "object" || intent === null) {
    return isDeepStrictEqual(intent, observed);
  }
  if (typeof observed !== "object" || observed === null || Array.isArray(observed)) return false;
  return Object.entries(intent).every(([field, value]) =>
    isContainedIn(value, (observed as Record<string, unknown>)[field]),
  );
}

export function intentDigest(intent: ApplyIntent): string {
  return createHash("sha256").update(stableJson(intent)).digest("hex").slice(0, 32);
}

/** What the cache keeps of an object of some kind (ResourceType.cacheForm); by default all of it. */
export type CacheForm = (object: KubeObject) => KubeObject;
const whole: CacheForm = (object) => object;

function stamped(intent: ApplyIntent, digest: string): ApplyIntent {
  const annotations = { ...(intent.metadata.annotations as Record<string, string> | undefined) };
  annotations[APPLIED_DIGEST_ANNOTATION] = digest;
  return { ...intent, metadata: { ...intent.metadata, annotations } };
}

/**
 * The intent as it is sent: stamped with the digest of its cache form, so that an intent can be
 * checked against the cache from its cache form alone (a Secret whose bytes the cache does not hold).
 */
export function withDigest(intent: ApplyIntent, cacheForm: CacheForm = whole): ApplyIntent {
  return stamped(intent, intentDigest(cacheForm(intent as KubeObject) as ApplyIntent));
}

/** Whether applying `intent` over `observed` (from the cache) would change anything. */
export function needsApply(
  intent: ApplyIntent,
  observed: KubeObject | undefined,
  cacheForm: CacheForm = whole,
): boolean {
  return cachedIntentChanges(cacheForm(intent as KubeObject) as ApplyIntent, observed);
}

/** needsApply for an intent known only in its cache form: what the cache will hold once it is applied. */
export function cachedIntentChanges(cached: ApplyIntent, observed: KubeObject | undefined): boolean {
  if (!observed) return true;
  return !isContainedIn(stripUndefined(stamped(cached, intentDigest(cached))), observed);
}

/**
 * Server-side applies `intent` unless `observed` already matches it; returns whether it wrote.
 * Pass the cached object as `observed` so a converged operator makes no requests.
 */
export async function applyIfChanged(
  client: KubeClient,
  resource: ResourceType,
  intent: ApplyIntent,
  observed: KubeObject | undefined,
  signal?: AbortSignal,
): Promise<boolean> {
  if (!needsApply(intent, observed, resource.cacheForm)) return false;
  await client.apply(resource, withDigest(intent, resource.cacheForm), signal);
  return true;
}

/**
 * Applies `status` through the status subresource unless it equals the observed status.
 * The whole status is compared but for `writtenElsewhere`: top-level status fields another writer of
 * this operator keeps (a Device's presence), which this apply neither owns nor removes.
 */
export async function applyStatusIfChanged(
  client: KubeClient,
  resource: ResourceType,
  observed: KubeObject & { status?: unknown },
  status: Record<string, unknown>,
  signal?: AbortSignal,
  writtenElsewhere: readonly string[] = [],
): Promise<boolean> {
  const compared = Object.fromEntries(
    Object.entries((observed.status ?? {}) as Record<string, unknown>).filter(
      ([k]) => !writtenElsewhere.includes(k),
    ),
  );
  if (isDeepStrictEqual(stripUndefined(status), compared)) return false;
  await client.applyStatus(
    resource,
    {
      apiVersion: resource.apiVersion,
      kind: resource.kind,
      metadata: {
        name: observed.metadata.name,
        ...(observed.metadata.namespace ? { namespace: observed.metadata.namespace } : {}),
      },
      status,
    },
    signal,
  );
  return true;
}

/** JSON with sorted keys, so equal intents hash equally whatever order they were built in. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (typeof value === "object" && value !== null) {
    const entries = Object.entries(value)
      .filter(([, field]) => field !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, field]) => `${JSON.stringify(key)}:${stableJson(field)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** What the status looks like after a JSON round trip: undefined fields vanish. */
function stripUndefined(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}
