import { ConditionReason, REASONS_NEEDING_A_PERSON } from "../api/conditions.js";
import type { ConditionUpdate } from "../runtime/conditions.js";

/**
 * The Stalled condition over an object's other conditions, in kstatus' terms (what Flux and
 * `kubectl wait` read): True, and so Failed there, while one of them is False for a reason that
 * retrying will not clear. Its own reason is ActionRequired, not the underlying one, so consumers
 * that react to a reason (events, audit) see it once, on the condition that has it.
 */
export function stalledCondition(parts: readonly ConditionUpdate[]): ConditionUpdate {
  const stuck = parts.find(
    (c) => c.status === "False" && REASONS_NEEDING_A_PERSON.has(c.reason as ConditionReason),
  );
  return stuck
    ? {
        type: "Stalled",
        status: "True",
        reason: ConditionReason.ActionRequired,
        message: `${stuck.type} ${stuck.reason}: ${stuck.message ?? ""}`,
      }
    : {
        type: "Stalled",
        status: "False",
        reason: ConditionReason.Reconciled,
        message: "nothing waits for a person",
      };
}
