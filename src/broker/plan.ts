import {
  type Acl,
  canonicalAcls,
  DEFAULT_ACL_ACCESS,
  type DesiredDevice,
  type DesiredGate,
  GATE_PRIORITY,
  narrows,
  SUSPENDED_ACLS,
  sameAcls,
} from "./desired.js";
import type { DynsecCommand } from "./dynsec-client.js";

export interface ObservedClient {
  readonly username: string;
  readonly textname?: string;
  readonly textdescription?: string;
  readonly roles: readonly string[];
  readonly groups: readonly string[];
}

export interface ObservedRole {
  readonly rolename: string;
  readonly acls: readonly Acl[];
}

/** What the broker holds for one owner name: its role and every client whose textname is the owner. */
export interface ObservedDevice {
  readonly role?: ObservedRole;
  readonly clients: readonly ObservedClient[];
}

export const NOTHING_OBSERVED: ObservedDevice = { clients: [] };

/** The observation that applying `desired` leaves behind; the adapter caches it after a clean apply. */
export function observationOf(desired: DesiredDevice | undefined): ObservedDevice {
  if (!desired) return NOTHING_OBSERVED;
  const role = { rolename: desired.owner, acls: desired.acls };
  const { client } = desired;
  if (!client) return { role, clients: [] };
  return {
    role,
    clients: [
      {
        username: client.username,
        textname: desired.owner,
        ...(client.passwordFingerprint ? { textdescription: client.passwordFingerprint } : {}),
        roles: [desired.owner, desired.gate],
        groups: [desired.gate],
      },
    ],
  };
}

function isCurrentClient(observed: ObservedClient, desired: DesiredDevice): boolean {
  return (
    desired.client !== undefined &&
    observed.username === desired.client.username &&
    observed.textdescription === desired.client.passwordFingerprint
  );
}

/** True when executing the plan removes a live identity or access: the writer does these first. */
export function isCutOff(desired: DesiredDevice | undefined, observed: ObservedDevice): boolean {
  if (observed.clients.some((client) => !desired || !isCurrentClient(client, desired))) return true;
  return desired !== undefined && observed.role !== undefined && narrows(observed.role.acls, desired.acls);
}

/**
 * The dynsec commands, in order, that turn `observed` into `desired` (undefined: the device must be
 * gone). Cut-offs come first. Narrowing a role does not drop live subscriptions on 2.0.x, so the
 * client's role is removed and added again, which kicks it; a changed password recreates the client.
 */
export function planDevice(desired: DesiredDevice | undefined, observed: ObservedDevice): DynsecCommand[] {
  const commands: DynsecCommand[] = [];
  const stale = observed.clients.filter((client) => !desired || !isCurrentClient(client, desired));
  for (const client of stale) commands.push({ command: "deleteClient", username: client.username });
  if (!desired) {
    if (observed.role) commands.push({ command: "deleteRole", rolename: observed.role.rolename });
    return commands;
  }

  const acls = canonicalAcls(desired.acls);
  let narrowed = false;
  if (!observed.role) commands.push({ command: "createRole", rolename: desired.owner, acls });
  else if (!sameAcls(observed.role.acls, acls)) {
    narrowed = narrows(observed.role.acls, acls);
    commands.push({ command: "modifyRole", rolename: desired.owner, acls });
  }

  const { client } = desired;
  if (!client) return commands;
  const current = observed.clients.find((candidate) => isCurrentClient(candidate, desired));
  if (!current) {
    commands.push({
      command: "createClient",
      username: client.username,
      ...(client.password ? { password: client.password } : {}),
      textname: desired.owner,
      ...(client.passwordFingerprint ? { textdescription: client.passwordFingerprint } : {}),
      roles: [{ rolename: desired.owner }, { rolename: desired.gate, priority: GATE_PRIORITY }],
      groups: [{ groupname: desired.gate }],
    });
    return commands;
  }
  const username = client.username;
  for (const rolename of current.roles.filter((name) => name !== desired.owner && name !== desired.gate))
    commands.push({ command: "removeClientRole", username, rolename });
  const hasRole = current.roles.includes(desired.owner);
  if (hasRole && narrowed) commands.push({ command: "removeClientRole", username, rolename: desired.owner });
  if (!hasRole || narrowed) commands.push({ command: "addClientRole", username, rolename: desired.owner });
  // A client made before tenants had gates gets its gate (each command kicks it once).
  if (!current.roles.includes(desired.gate))
    commands.push({ command: "addClientRole", username, rolename: desired.gate, priority: GATE_PRIORITY });
  if (!current.groups.includes(desired.gate))
    commands.push({ command: "addGroupClient", username, groupname: desired.gate });
  return commands;
}

/** What the broker holds of a tenant's gate: its role's ACLs and its group's roles; absent when missing. */
export interface ObservedGate {
  readonly acls?: readonly Acl[];
  readonly groupRoles?: readonly string[];
}

export const NO_GATE: ObservedGate = {};

/** The observation that applying `desired` leaves behind. */
export function gateObservationOf(desired: DesiredGate | undefined): ObservedGate {
  if (!desired) return NO_GATE;
  return {
    acls: desired.suspended ? SUSPENDED_ACLS : [],
    groupRoles: desired.suspended ? [desired.name] : [],
  };
}

/** True when the gate must close: the writer does this before any other work. */
export function gateCutsOff(desired: DesiredGate | undefined, observed: ObservedGate): boolean {
  return desired?.suspended === true && !sameAcls(observed.acls ?? [], SUSPENDED_ACLS);
}

/**
 * The commands that turn the gate `name` as observed into `desired` (undefined: gone, after the
 * tenant's devices). Closing sets the denials first, then adds the gate role to the group, which
 * kicks every member so none keeps a session opened before; opening clears the denials, then
 * removes the role from the group, which kicks them again so they subscribe afresh.
 */
export function planGate(
  name: string,
  desired: DesiredGate | undefined,
  observed: ObservedGate,
): DynsecCommand[] {
  const commands: DynsecCommand[] = [];
  if (!desired) {
    if (observed.groupRoles) commands.push({ command: "deleteGroup", groupname: name });
    if (observed.acls) commands.push({ command: "deleteRole", rolename: name });
    return commands;
  }
  const acls = desired.suspended ? [...SUSPENDED_ACLS] : [];
  if (!observed.acls) commands.push({ command: "createRole", rolename: name, acls });
  else if (!sameAcls(observed.acls, acls)) commands.push({ command: "modifyRole", rolename: name, acls });
  if (!observed.groupRoles) commands.push({ command: "createGroup", groupname: name });
  const closed = observed.groupRoles?.includes(name) ?? false;
  if (desired.suspended && !closed)
    commands.push({ command: "addGroupRole", groupname: name, rolename: name });
  if (!desired.suspended && closed)
    commands.push({ command: "removeGroupRole", groupname: name, rolename: name });
  return commands;
}

/**
 * Usernames whose MQTT sessions must be discarded once the plan has run: those of a device that is
 * gone. Deleting a dynsec client drops the connection but leaves a persistent session (subscriptions,
 * queued messages) for the next one to log in as that username. A disabled device keeps its session,
 * so enabling it again resumes it; deliveries are checked against the grant it has then.
 */
export function sessionsToDiscard(desired: DesiredDevice | undefined, observed: ObservedDevice): string[] {
  return desired ? [] : observed.clients.map((client) => client.username);
}

/** The broker's default access as `getDefaultACLAccess` reports it. */
export interface ObservedDefaultAccess {
  readonly acltype: string;
  readonly allow: boolean;
}

/**
 * The command that sets every default that differs from DEFAULT_ACL_ACCESS (none when all match): a
 * broker initialised by `mosquitto_ctrl dynsec init` lets every subscription receive by default.
 */
export function planDefaultAccess(observed: readonly ObservedDefaultAccess[]): DynsecCommand[] {
  const current = new Map(observed.map((entry) => [entry.acltype, entry.allow]));
  const acls = Object.entries(DEFAULT_ACL_ACCESS)
    .filter(([acltype, allow]) => current.get(acltype) !== allow)
    .map(([acltype, allow]) => ({ acltype, allow }));
  return acls.length ? [{ command: "setDefaultACLAccess", acls }] : [];
}

/**
 * The pause after one change. Mosquitto 2.0 rewrites its whole state file on every change and
 * serves no client meanwhile, so a change taking `durationMs` is followed by `pacing ×
 * durationMs` of quiet. A cut-off must not wait that out behind a provisioning change: the pause
 * after a change that cuts nothing off may be deferred, and what a cut-off deferred is added to
 * the next pause, which cannot be deferred again. The broker gets the same quiet, once moved
 * behind the kick, never skipped, and a stream of cut-offs is paced like any other change.
 */
export function pauseAfter(change: {
  readonly durationMs: number;
  readonly pacing: number;
  /** Deferred by a cut-off from the pause before. */
  readonly owedMs: number;
  /** The change cuts access off (a cut-off's own pauses are kept). */
  readonly cutsOff: boolean;
}): { readonly pauseMs: number; readonly deferrable: boolean } {
  if (change.pacing <= 0) return { pauseMs: 0, deferrable: false };
  return {
    pauseMs: change.durationMs * change.pacing + change.owedMs,
    deferrable: !change.cutsOff && change.owedMs === 0,
  };
}

/**
 * What a pause leaves owed: the unslept rest when a cut-off cut it short, else nothing — a timer
 * may fire a fraction of a millisecond before the clock says the pause is over, and such a rest
 * must not make the next pause binding.
 */
export function owedAfterPause(pause: {
  readonly pauseMs: number;
  readonly elapsedMs: number;
  readonly cutShort: boolean;
}): number {
  return pause.cutShort ? Math.max(0, pause.pauseMs - pause.elapsedMs) : 0;
}
