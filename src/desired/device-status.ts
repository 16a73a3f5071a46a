import { ConditionReason, DeviceConditionType } from "../api/conditions.js";
import type { ConditionUpdate } from "../runtime/conditions.js";
import { stalledCondition } from "./stalled.js";

export type ConditionOutcome = Omit<ConditionUpdate, "type">;

/** What the Device reconciler learned, reduced to what its conditions depend on. */
export interface DeviceObservation {
  readonly credentials: ConditionOutcome;
  /** Absent until there are credentials to hand to the broker. */
  readonly broker?: ConditionOutcome;
  readonly enabled: boolean;
  readonly suspended: boolean;
}

/**
 * CredentialsIssued, BrokerSynced, Stalled and Ready. A disabled or suspended device can be perfectly in
 * sync (the broker holds it cut off) and still not Ready: it cannot be used.
 */
export function deviceConditions(o: DeviceObservation): ConditionUpdate[] {
  const broker: ConditionOutcome = o.broker ?? {
    status: "False",
    reason: ConditionReason.DependencyNotReady,
    message: "no credentials yet",
  };
  const ready: ConditionOutcome =
    o.credentials.status !== "True"
      ? { ...o.credentials, status: "False" }
      : broker.status !== "True"
        ? { ...broker, status: "False" }
        : !o.enabled
          ? { status: "False", reason: ConditionReason.Disabled, message: "cut off: spec.enabled is false" }
          : o.suspended
            ? {
                status: "False",
                reason: ConditionReason.Suspended,
                message: "cut off: the tenant is suspended",
              }
            : {
                status: "True",
                reason: ConditionReason.Reconciled,
                message: "the broker grants exactly the device's topics",
              };
  const parts: ConditionUpdate[] = [
    { type: DeviceConditionType.CredentialsIssued, ...o.credentials },
    { type: DeviceConditionType.BrokerSynced, ...broker },
  ];
  return [...parts, stalledCondition(parts), { type: DeviceConditionType.Ready, ...ready }];
}
