export type ConditionStatus = "True" | "False" | "Unknown";

/** A metav1.Condition. */
export interface Condition {
  readonly type: string;
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime: string;
}

export interface ConditionUpdate {
  readonly type: string;
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message?: string;
}

/** RFC 3339 with whole seconds, the precision the API server stores; anything finer would never compare equal. */
export function conditionTime(epochMs: number): string {
  return new Date(Math.floor(epochMs / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

/**
 * Returns `conditions` with `update` applied: `lastTransitionTime` moves only when the status
 * flips (or the condition is new), `observedGeneration` is the generation just reconciled.
 * The order of existing conditions is kept, so an unchanged set compares equal.
 */
export function setCondition(
  conditions: readonly Condition[],
  update: ConditionUpdate,
  at: { readonly generation?: number; readonly nowMs: number },
): Condition[] {
  const previous = conditions.find((condition) => condition.type === update.type);
  const next: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: update.message ?? "",
    ...(at.generation === undefined ? {} : { observedGeneration: at.generation }),
    lastTransitionTime:
      previous && previous.status === update.status ? previous.lastTransitionTime : conditionTime(at.nowMs),
  };
  if (!previous) return [...conditions, next];
  return conditions.map((condition) => (condition === previous ? next : condition));
}

export function findCondition(
  conditions: readonly Condition[] | undefined,
  type: string,
): Condition | undefined {
  return conditions?.find((condition) => condition.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(conditions, type)?.status === "True";
}

/** `status.conditions` of any object, empty when it has none yet. */
export function conditionsOf(object: object | undefined): Condition[] {
  return (object as { status?: { conditions?: Condition[] } } | undefined)?.status?.conditions ?? [];
}

/** Whether the object's Ready condition is True (cert-manager's kinds and ours alike). */
export function isReady(object: object | undefined): boolean {
  return isConditionTrue(conditionsOf(object), "Ready");
}
