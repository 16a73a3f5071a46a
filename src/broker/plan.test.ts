import { describe, expect, it } from "vitest";
import { type Acl, type DesiredDevice, GATE_PRIORITY, SUSPENDED_ACLS } from "./desired.js";
import {
  gateCutsOff,
  gateObservationOf,
  isCutOff,
  NO_GATE,
  NOTHING_OBSERVED,
  type ObservedDevice,
  observationOf,
  owedAfterPause,
  pauseAfter,
  planDefaultAccess,
  planDevice,
  planGate,
  sessionsToDiscard,
} from "./plan.js";

const own: Acl = { acltype: "publishClientSend", topic: "t/devices/d/#", priority: 0, allow: true };
const extra: Acl = { acltype: "subscribePattern", topic: "t/#", priority: 0, allow: true };
const owner = "iot:t:d";
const gate = "iot:t";
const enabled: DesiredDevice = { owner, gate, acls: [own], client: { username: "CN=d,O=t" } };
const disabled: DesiredDevice = { owner, gate, acls: [own] };
/** The roles and group a device's client is created with. */
const membership = {
  roles: [{ rolename: owner }, { rolename: gate, priority: GATE_PRIORITY }],
  groups: [{ groupname: gate }],
};
const user = "CN=d,O=t";

const observed = (acls: Acl[], clients: ObservedDevice["clients"]): ObservedDevice => ({
  role: { rolename: owner, acls },
  clients,
});
const ownClient = { username: user, textname: owner, roles: [owner, gate], groups: [gate] };

describe("planDevice", () => {
  it.each([
    {
      name: "new device: role, then client",
      desired: enabled,
      observed: NOTHING_OBSERVED,
      commands: [
        { command: "createRole", rolename: owner, acls: [own] },
        { command: "createClient", username: user, textname: owner, ...membership },
      ],
    },
    { name: "in sync: nothing", desired: enabled, observed: observationOf(enabled), commands: [] },
    {
      name: "disabled: the client goes, the role stays",
      desired: disabled,
      observed: observationOf(enabled),
      commands: [{ command: "deleteClient", username: user }],
    },
    {
      name: "re-enabled: one command",
      desired: enabled,
      observed: observationOf(disabled),
      commands: [{ command: "createClient", username: user, textname: owner, ...membership }],
    },
    {
      name: "removed: client, then role",
      desired: undefined,
      observed: observationOf(enabled),
      commands: [
        { command: "deleteClient", username: user },
        { command: "deleteRole", rolename: owner },
      ],
    },
    { name: "removed and absent: nothing", desired: undefined, observed: NOTHING_OBSERVED, commands: [] },
    {
      name: "widened role: modified without a kick",
      desired: { ...enabled, acls: [own, extra] },
      observed: observationOf(enabled),
      commands: [{ command: "modifyRole", rolename: owner, acls: [own, extra] }],
    },
    {
      name: "narrowed role: modified, then the client is kicked by removing and adding its role",
      desired: enabled,
      observed: observationOf({ ...enabled, acls: [own, extra] }),
      commands: [
        { command: "modifyRole", rolename: owner, acls: [own] },
        { command: "removeClientRole", username: user, rolename: owner },
        { command: "addClientRole", username: user, rolename: owner },
      ],
    },
    {
      name: "drifted client roles: foreign role removed, own role added",
      desired: enabled,
      observed: observed([own], [{ ...ownClient, roles: ["admin", gate] }]),
      commands: [
        { command: "removeClientRole", username: user, rolename: "admin" },
        { command: "addClientRole", username: user, rolename: owner },
      ],
    },
    {
      name: "a client made before tenant gates: it gets its gate role and group",
      desired: enabled,
      observed: observed([own], [{ ...ownClient, roles: [owner], groups: [] }]),
      commands: [
        { command: "addClientRole", username: user, rolename: gate, priority: GATE_PRIORITY },
        { command: "addGroupClient", username: user, groupname: gate },
      ],
    },
    {
      name: "changed username (reissued certificate): old client deleted, new one created",
      desired: { ...enabled, client: { username: "CN=d,O=t,C=DE" } },
      observed: observationOf(enabled),
      commands: [
        { command: "deleteClient", username: user },
        { command: "createClient", username: "CN=d,O=t,C=DE", textname: owner, ...membership },
      ],
    },
    {
      name: "changed password: client recreated with the new one",
      desired: {
        owner,
        gate,
        acls: [own],
        client: { username: "t/d", password: "new", passwordFingerprint: "fp-new" },
      },
      observed: observed(
        [own],
        [
          {
            username: "t/d",
            textname: owner,
            textdescription: "fp-old",
            roles: [owner, gate],
            groups: [gate],
          },
        ],
      ),
      commands: [
        { command: "deleteClient", username: "t/d" },
        {
          command: "createClient",
          username: "t/d",
          password: "new",
          textname: owner,
          textdescription: "fp-new",
          ...membership,
        },
      ],
    },
  ])("$name", ({ desired, observed, commands }) => {
    expect(planDevice(desired, observed)).toEqual(commands);
  });
});

describe("planGate", () => {
  const open = { name: gate, suspended: false };
  const closed = { name: gate, suspended: true };
  const deny = [...SUSPENDED_ACLS];
  it.each([
    {
      name: "new tenant: an empty role and a group",
      desired: open,
      observed: NO_GATE,
      commands: [
        { command: "createRole", rolename: gate, acls: [] },
        { command: "createGroup", groupname: gate },
      ],
    },
    { name: "open and in sync: nothing", desired: open, observed: gateObservationOf(open), commands: [] },
    {
      name: "suspend: denials first, then the group kick, two commands whatever the tenant's size",
      desired: closed,
      observed: gateObservationOf(open),
      commands: [
        { command: "modifyRole", rolename: gate, acls: deny },
        { command: "addGroupRole", groupname: gate, rolename: gate },
      ],
    },
    {
      name: "suspended and in sync: nothing",
      desired: closed,
      observed: gateObservationOf(closed),
      commands: [],
    },
    {
      name: "resume: denials cleared, then the group kick so devices subscribe afresh",
      desired: open,
      observed: gateObservationOf(closed),
      commands: [
        { command: "modifyRole", rolename: gate, acls: [] },
        { command: "removeGroupRole", groupname: gate, rolename: gate },
      ],
    },
    {
      name: "a new tenant created suspended: closed from the start",
      desired: closed,
      observed: NO_GATE,
      commands: [
        { command: "createRole", rolename: gate, acls: deny },
        { command: "createGroup", groupname: gate },
        { command: "addGroupRole", groupname: gate, rolename: gate },
      ],
    },
    {
      name: "gone: group, then role",
      desired: undefined,
      observed: gateObservationOf(closed),
      commands: [
        { command: "deleteGroup", groupname: gate },
        { command: "deleteRole", rolename: gate },
      ],
    },
    { name: "gone and absent: nothing", desired: undefined, observed: NO_GATE, commands: [] },
  ])("$name", ({ desired, observed, commands }) => {
    expect(planGate(gate, desired, observed)).toEqual(commands);
  });

  it.each([
    { name: "suspending", desired: closed, observed: gateObservationOf(open), expected: true },
    { name: "suspending a new tenant", desired: closed, observed: NO_GATE, expected: true },
    { name: "already suspended", desired: closed, observed: gateObservationOf(closed), expected: false },
    { name: "resuming", desired: open, observed: gateObservationOf(closed), expected: false },
    { name: "removing", desired: undefined, observed: gateObservationOf(open), expected: false },
  ])("cuts off when $name: $expected", ({ desired, observed, expected }) => {
    expect(gateCutsOff(desired, observed)).toBe(expected);
  });
});

describe("isCutOff", () => {
  it.each([
    { name: "new device", desired: enabled, observed: NOTHING_OBSERVED, expected: false },
    { name: "disabling", desired: disabled, observed: observationOf(enabled), expected: true },
    { name: "removing", desired: undefined, observed: observationOf(enabled), expected: true },
    {
      name: "narrowing",
      desired: enabled,
      observed: observationOf({ ...enabled, acls: [own, extra] }),
      expected: true,
    },
    {
      name: "widening",
      desired: { ...enabled, acls: [own, extra] },
      observed: observationOf(enabled),
      expected: false,
    },
  ])("$name: $expected", ({ desired, observed, expected }) => {
    expect(isCutOff(desired, observed)).toBe(expected);
  });
});

describe("pauseAfter", () => {
  it.each([
    {
      name: "a provisioning change: paced, and a cut-off may defer the pause",
      change: { durationMs: 40, pacing: 1, owedMs: 0, cutsOff: false },
      expected: { pauseMs: 40, deferrable: true },
    },
    {
      name: "a cut-off's own change: its pause is kept",
      change: { durationMs: 40, pacing: 1, owedMs: 0, cutsOff: true },
      expected: { pauseMs: 40, deferrable: false },
    },
    {
      name: "after a deferred pause: the debt is added and cannot be deferred again",
      change: { durationMs: 40, pacing: 1, owedMs: 30, cutsOff: false },
      expected: { pauseMs: 70, deferrable: false },
    },
    {
      name: "a cut-off after a deferred pause pays the debt",
      change: { durationMs: 10, pacing: 2, owedMs: 30, cutsOff: true },
      expected: { pauseMs: 50, deferrable: false },
    },
    {
      name: "unpaced: no pause",
      change: { durationMs: 40, pacing: 0, owedMs: 0, cutsOff: false },
      expected: { pauseMs: 0, deferrable: false },
    },
  ])("$name", ({ change, expected }) => {
    expect(pauseAfter(change)).toEqual(expected);
  });
});

describe("sessionsToDiscard", () => {
  it.each([
    { name: "a removed device: its clients' sessions", desired: undefined, expected: [user] },
    { name: "a removed device with no client left: nothing", desired: undefined, clients: [], expected: [] },
    { name: "a disabled device keeps its session", desired: disabled, expected: [] },
    { name: "an enabled device keeps its session", desired: enabled, expected: [] },
  ])("$name", ({ desired, clients, expected }) => {
    expect(sessionsToDiscard(desired, observed([own], clients ?? [ownClient]))).toEqual(expected);
  });
});

describe("planDefaultAccess", () => {
  const dynsecInitDefaults = [
    { acltype: "publishClientSend", allow: false },
    { acltype: "publishClientReceive", allow: true },
    { acltype: "subscribe", allow: false },
    { acltype: "unsubscribe", allow: true },
  ];
  it.each([
    {
      name: "mosquitto_ctrl's defaults: delivery is denied",
      observed: dynsecInitDefaults,
      commands: [
        { command: "setDefaultACLAccess", acls: [{ acltype: "publishClientReceive", allow: false }] },
      ],
    },
    {
      name: "already the operator's: nothing",
      observed: dynsecInitDefaults.map((d) =>
        d.acltype === "publishClientReceive" ? { ...d, allow: false } : d,
      ),
      commands: [],
    },
    {
      name: "everything allowed: all but unsubscribe denied",
      observed: dynsecInitDefaults.map((d) => ({ ...d, allow: true })),
      commands: [
        {
          command: "setDefaultACLAccess",
          acls: [
            { acltype: "publishClientSend", allow: false },
            { acltype: "publishClientReceive", allow: false },
            { acltype: "subscribe", allow: false },
          ],
        },
      ],
    },
  ])("$name", ({ observed, commands }) => {
    expect(planDefaultAccess(observed)).toEqual(commands);
  });
});

describe("owedAfterPause", () => {
  it.each([
    {
      name: "cut short by a cut-off: the rest is owed",
      pause: { pauseMs: 100, elapsedMs: 30, cutShort: true },
      owed: 70,
    },
    {
      name: "cut short at once (a cut-off already waiting): all of it",
      pause: { pauseMs: 100, elapsedMs: 0, cutShort: true },
      owed: 100,
    },
    { name: "slept in full: nothing", pause: { pauseMs: 100, elapsedMs: 100.2, cutShort: false }, owed: 0 },
    // The timer fired a fraction early by the clock: still nothing, or the next pause could not be deferred.
    {
      name: "slept in full by the timer, a fraction short by the clock: nothing",
      pause: { pauseMs: 656.6, elapsedMs: 655.7, cutShort: false },
      owed: 0,
    },
  ])("$name", ({ pause, owed }) => {
    expect(owedAfterPause(pause)).toBeCloseTo(owed);
  });
});
