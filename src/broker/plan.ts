import { type Acl, canonicalAcls, type DesiredDevice, narrows, sameAcls } from "./desired.js";
import type { DynsecCommand } from "./dynsec-client.js";

export interface ObservedClient {
  readonly username: string;
  readonly textname?: string;
  readonly textdescription?: string;
  readonly roles: readonly string[];
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
        roles: [desired.owner],
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
      roles: [{ rolename: desired.owner }],
    });
    return commands;
  }
  for (const rolename of current.roles.filter((name) => name !== desired.owner))
    commands.push({ command: "removeClientRole", username: client.username, rolename });
  const hasRole = current.roles.includes(desired.owner);
  if (hasRole && narrowed)
    commands.push({ command: "removeClientRole", username: client.username, rolename: desired.owner });
  if (!hasRole || narrowed)
    commands.push({ command: "addClientRole", username: client.username, rolename: desired.owner });
  return commands;
}
