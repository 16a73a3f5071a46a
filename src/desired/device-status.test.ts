import { describe, expect, it } from "vitest";
import { type DeviceObservation, deviceConditions } from "./device-status.js";

const issued = { status: "True", reason: "Reconciled" } as const;
const synced = { status: "True", reason: "Reconciled", message: "in sync" } as const;

const summary = (o: DeviceObservation) =>
  deviceConditions(o)
    .map((c) => `${c.type}=${c.status}/${c.reason}`)
    .join(" ");

describe("deviceConditions", () => {
  it.each<[string, DeviceObservation, string]>([
    [
      "provisioned",
      { credentials: issued, broker: synced, enabled: true, suspended: false },
      "CredentialsIssued=True/Reconciled BrokerSynced=True/Reconciled Stalled=False/Reconciled Ready=True/Reconciled",
    ],
    [
      "disabled: in sync, cut off, not usable",
      { credentials: issued, broker: synced, enabled: false, suspended: false },
      "CredentialsIssued=True/Reconciled BrokerSynced=True/Reconciled Stalled=False/Reconciled Ready=False/Disabled",
    ],
    [
      "suspended tenant",
      { credentials: issued, broker: synced, enabled: true, suspended: true },
      "CredentialsIssued=True/Reconciled BrokerSynced=True/Reconciled Stalled=False/Reconciled Ready=False/Suspended",
    ],
    [
      "broker down",
      {
        credentials: issued,
        broker: { status: "False", reason: "BrokerError", message: "refused" },
        enabled: true,
        suspended: false,
      },
      "CredentialsIssued=True/Reconciled BrokerSynced=False/BrokerError Stalled=False/Reconciled Ready=False/BrokerError",
    ],
    [
      "waiting for cert-manager",
      {
        credentials: { status: "False", reason: "Progressing", message: "waiting" },
        enabled: true,
        suspended: false,
      },
      "CredentialsIssued=False/Progressing BrokerSynced=False/DependencyNotReady Stalled=False/Reconciled Ready=False/Progressing",
    ],
    [
      "over the tenant's limit",
      {
        credentials: { status: "False", reason: "DeviceLimitReached", message: "max 1" },
        enabled: true,
        suspended: false,
      },
      "CredentialsIssued=False/DeviceLimitReached BrokerSynced=False/DependencyNotReady Stalled=True/ActionRequired Ready=False/DeviceLimitReached",
    ],
    [
      "quarantined: cut off in sync, credentials revoked",
      {
        credentials: { status: "False", reason: "Quarantined", message: "quarantined (TamperReported …)" },
        broker: synced,
        enabled: true,
        suspended: false,
      },
      "CredentialsIssued=False/Quarantined BrokerSynced=True/Reconciled Stalled=True/ActionRequired Ready=False/Quarantined",
    ],
  ])("%s", (_, observation, expected) => {
    expect(summary(observation)).toBe(expected);
  });

  it("names the condition that stalls the device in Stalled's message", () => {
    const stalled = deviceConditions({
      credentials: { status: "False", reason: "DeviceNameTaken", message: "older device b/d1 has the name" },
      enabled: true,
      suspended: false,
    }).find((c) => c.type === "Stalled");
    expect(stalled).toEqual({
      type: "Stalled",
      status: "True",
      reason: "ActionRequired",
      message: "CredentialsIssued DeviceNameTaken: older device b/d1 has the name",
    });
  });
});
