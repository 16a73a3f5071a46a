import { QUARANTINE_ANNOTATION } from "./labels.js";

/**
 * Quarantine, decided here and recorded in the API only: the security monitor sets the Device's
 * quarantine annotation when its Tenant's devicePolicy asks, the Device reconciler cuts off every
 * Device that carries it, and an admin removes it to release the Device. Pure.
 */

/** Why the Device is quarantined, or undefined when it is not. */
export function quarantineOf(device: {
  metadata: { annotations?: Record<string, string> | undefined };
}): string | undefined {
  return device.metadata.annotations?.[QUARANTINE_ANNOTATION];
}

/**
 * Whether a security event of a Device quarantines it: only an event kind the Tenant's
 * `spec.devicePolicy.quarantineOn` names, and only once (a quarantined Device stays as it is
 * until released, so a later event does not rewrite why it was quarantined).
 */
export function shouldQuarantine(input: {
  readonly kind: string;
  readonly quarantineOn: readonly string[] | undefined;
  readonly quarantined: boolean;
}): boolean {
  return !input.quarantined && (input.quarantineOn ?? []).includes(input.kind);
}

/** The annotation's value: what happened and when, for the admin who decides on the release. */
export function quarantineNote(kind: string, note: string, at: Date): string {
  return `${kind} at ${at.toISOString()}: ${note}`.slice(0, 1024);
}
