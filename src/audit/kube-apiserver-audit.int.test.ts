import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { beforeAll, describe, expect, inject, it } from "vitest";
import { eventually, uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { API_VERSION } from "../api/group.js";

/**
 * The README's kube-apiserver audit policy (kube-apiserver-audit-policy.yaml) on the real API server:
 * the stack's kube-apiserver runs with it (so the server accepts it), and its log answers "which
 * person suspended this tenant" without ever holding a Secret's data.
 */

const repoRoot = join(import.meta.dirname, "../..");

interface AuditEvent {
  verb: string;
  user: { username: string };
  impersonatedUser?: { username: string };
  objectRef?: { resource?: string; name?: string; namespace?: string };
  requestObject?: unknown;
  responseStatus?: { code?: number };
  level: string;
}

async function auditEvents(): Promise<AuditEvent[]> {
  const text = await readFile(inject("stack").apiServerAuditLog, "utf8");
  return text
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditEvent);
}

const as = { user: "alice@example.com", groups: ["system:masters"] };

describe("the kube-apiserver audit policy for Tenants and Devices", () => {
  beforeAll(async () => {
    const applied = await kubectl(["apply", "--server-side", "-f", join(repoRoot, "crds")]);
    expect(applied.stderr).toBe("");
  });

  it("records who suspended a Tenant, with the change, and a Secret's name without its data", async () => {
    const tenant = uniqueName("audited");
    const manifest = { apiVersion: API_VERSION, kind: "Tenant", metadata: { name: tenant }, spec: {} };
    expect((await kubectl(["create", "-f", "-"], { stdin: JSON.stringify(manifest), as })).ok).toBe(true);
    const patch = JSON.stringify({ spec: { suspended: true } });
    expect((await kubectl(["patch", "tenant", tenant, "--type=merge", "-p", patch], { as })).ok).toBe(true);
    const secretValue = `s3cr3t-${uniqueName("v")}`;
    const secret = uniqueName("audited-secret");
    const created = await kubectl(
      ["create", "secret", "generic", secret, "-n", "default", `--from-literal=password=${secretValue}`],
      { as },
    );
    expect(created.ok).toBe(true);

    const suspension = await eventually("the suspension in the audit log", async () =>
      (await auditEvents()).find(
        (e) => e.verb === "patch" && e.objectRef?.resource === "tenants" && e.objectRef.name === tenant,
      ),
    );
    expect(suspension.impersonatedUser?.username).toBe(as.user);
    expect(suspension.level).toBe("RequestResponse");
    expect(suspension.requestObject).toEqual({ spec: { suspended: true } });

    const secretEvents = await eventually("the Secret's creation in the audit log", async () => {
      const found = (await auditEvents()).filter(
        (e) => e.objectRef?.resource === "secrets" && e.objectRef.name === secret,
      );
      return found.length > 0 ? found : undefined;
    });
    expect(secretEvents.every((e) => e.level === "Metadata" && e.requestObject === undefined)).toBe(true);
    expect(await readFile(inject("stack").apiServerAuditLog, "utf8")).not.toContain(secretValue);
    expect(await readFile(inject("stack").apiServerAuditLog, "utf8")).not.toContain(
      Buffer.from(secretValue).toString("base64"),
    );

    // Positive twin of "nothing else is logged": the rest of the cluster stays out of this policy's log.
    expect((await auditEvents()).some((e) => e.objectRef?.resource === "configmaps")).toBe(false);
    await kubectl(["delete", "tenant", tenant, "--wait=false"]);
    await kubectl(["delete", "secret", secret, "-n", "default"]);
  });

  it("records a refused attempt on a Tenant with who tried it", async () => {
    const tenant = uniqueName("victim");
    const manifest = { apiVersion: API_VERSION, kind: "Tenant", metadata: { name: tenant }, spec: {} };
    expect((await kubectl(["create", "-f", "-"], { stdin: JSON.stringify(manifest) })).ok).toBe(true);
    // A user with no right on Tenants (a tenant admin's rights are namespaced) tries to delete it.
    const mallory = { user: `mallory-${uniqueName("u")}` };
    const attempt = await kubectl(["delete", "tenant", tenant, "--wait=false"], { as: mallory });
    expect(attempt.ok).toBe(false);
    expect(attempt.stderr).toMatch(/forbidden/);

    const refused = await eventually("the refused attempt in the audit log", async () =>
      (await auditEvents()).find(
        (e) => e.impersonatedUser?.username === mallory.user && e.objectRef?.name === tenant,
      ),
    );
    expect(refused).toMatchObject({ verb: "delete", responseStatus: { code: 403 } });
    await kubectl(["delete", "tenant", tenant, "--wait=false"]);
  });
});
