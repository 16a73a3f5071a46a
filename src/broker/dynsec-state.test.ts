import { describe, expect, it } from "vitest";
import { DEFAULT_ACL_ACCESS } from "./desired.js";
import { initialDynsecState } from "./dynsec-state.js";
import { planDefaultAccess } from "./plan.js";

describe("initialDynsecState", () => {
  const state = JSON.parse(initialDynsecState("operator-admin")) as {
    clients: Array<Record<string, unknown>>;
    roles: Array<{ rolename: string; acls: Array<{ acltype: string; topic: string }> }>;
    defaultACLAccess: Record<string, boolean>;
  };

  it("gives the admin client no password: it can log in only with its certificate", () => {
    expect(state.clients).toEqual([
      { username: "operator-admin", textname: "iot-tenant-operator admin", roles: [{ rolename: "admin" }] },
    ]);
  });

  it("starts with the operator's defaults, so there is nothing to correct on first connect", () => {
    expect(state.defaultACLAccess).toEqual(DEFAULT_ACL_ACCESS);
    const observed = Object.entries(state.defaultACLAccess).map(([acltype, allow]) => ({ acltype, allow }));
    expect(planDefaultAccess(observed)).toEqual([]);
  });

  it("lets the admin receive its own $CONTROL responses, which `#` does not match", () => {
    const grants = state.roles[0]?.acls.map((a) => `${a.acltype} ${a.topic}`) ?? [];
    expect(grants).toEqual(
      expect.arrayContaining([
        "publishClientSend $CONTROL/dynamic-security/#",
        "publishClientReceive $CONTROL/dynamic-security/#",
        "subscribePattern $CONTROL/dynamic-security/#",
        "publishClientSend #",
        "subscribePattern #",
        "publishClientReceive #",
      ]),
    );
  });
});
