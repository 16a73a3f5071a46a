import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { parseAllDocuments } from "yaml";
import { main } from "./main.js";

const repoRoot = join(import.meta.dirname, "../..");

function capture(stream: NodeJS.WriteStream): { text: () => string } {
  let text = "";
  vi.spyOn(stream, "write").mockImplementation((chunk: string | Uint8Array) => {
    text += String(chunk);
    return true;
  });
  return { text: () => text };
}

describe("the iot-tenant-operator command", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("renders what a Tenant becomes without a cluster", async () => {
    const out = capture(process.stdout);
    expect(await main(["render", join(repoRoot, "examples/acme/tenant.yaml")])).toBe(0);
    const kinds = parseAllDocuments(out.text()).map((d) => (d.toJS() as { kind: string }).kind);
    expect(kinds.filter((k) => k === "Namespace")).toHaveLength(2);
    expect(kinds.filter((k) => k === "NetworkPolicy")).toHaveLength(12);
    expect(kinds).toEqual(expect.arrayContaining(["RoleBinding", "ResourceQuota", "LimitRange", "Issuer"]));
  });

  it.each([
    { args: ["render"], code: 1, message: /name at least one file/ },
    { args: ["render", join(repoRoot, "examples/acme/devices.yaml")], code: 1, message: /no Tenant/ },
    { args: ["frobnicate"], code: 2, message: /usage: iot-tenant-operator/ },
  ])("refuses $args with exit code $code and says why", async ({ args, code, message }) => {
    const err = capture(process.stderr);
    expect(await main(args)).toBe(code);
    expect(err.text()).toMatch(message);
  });
});
