import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { stackVariables } from "../../test/harness/stack.js";
import { cli } from "../../test/support/cli.js";
import { uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { adminConnection } from "../../test/support/mqtt.js";
import {
  applyDevice,
  applyReadyTenant,
  deviceReadyReason,
  readyDevice,
  startTestOperator,
} from "../../test/support/operator.js";
import { API_VERSION } from "../api/group.js";
import { DynsecClient } from "../broker/dynsec-client.js";
import type { RunningOperator } from "../operator.js";
import { grantLine, uidPlaceholder } from "./render.js";

type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [field: string]: unknown;
};

const KINDS_BY_TENANT_LABEL = [
  "namespaces",
  "networkpolicies",
  "rolebindings",
  "resourcequotas",
  "limitranges",
  "issuers.cert-manager.io",
  "certificates.cert-manager.io",
];

async function live(object: Manifest): Promise<Record<string, unknown>> {
  const group = object.apiVersion.includes("/") ? `.${object.apiVersion.split("/")[0]}` : "";
  const ns = object.metadata.namespace ? ["-n", object.metadata.namespace] : [];
  const result = await kubectl(["get", `${object.kind}${group}`, object.metadata.name, ...ns, "-o", "json"]);
  if (!result.ok) throw new Error(`${object.kind} ${object.metadata.name}: ${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

describe("render prints what the operator applies", () => {
  let operator: RunningOperator;
  beforeAll(async () => {
    operator = await startTestOperator();
  });
  afterAll(async () => {
    await operator?.stop();
  });

  it("equals the live objects and broker grants of a Tenant and its Devices", async () => {
    const tenant = uniqueName("render");
    const lab = `${tenant}-lab`;
    const tenantSpec = {
      namespaces: [tenant, lab],
      admins: [{ kind: "Group", name: `${tenant}-admins` }],
      network: { allowEgressCIDRs: ["192.0.2.0/24"], egressPorts: [{ protocol: "TCP", port: 443 }] },
      quota: { hard: { pods: "10" } },
    };
    const gatewaySpec = {
      topics: {
        publish: ["devices/gw/#", "sites/+/telemetry"],
        subscribe: ["devices/gw/#", "sites/+/commands"],
      },
      certificate: { duration: "720h", renewBefore: "168h" },
    };
    const meterSpec = { authentication: { type: "password" }, enabled: false };
    await applyReadyTenant(tenant, tenantSpec);
    await applyDevice(tenant, "gw", gatewaySpec);
    await applyDevice(lab, "meter", meterSpec);
    await readyDevice(tenant, "gw");
    await deviceReadyReason(lab, "meter", "Disabled");

    const manifests = [
      { apiVersion: API_VERSION, kind: "Tenant", metadata: { name: tenant }, spec: tenantSpec },
      {
        apiVersion: API_VERSION,
        kind: "Device",
        metadata: { name: "gw", namespace: tenant },
        spec: gatewaySpec,
      },
      {
        apiVersion: API_VERSION,
        kind: "Device",
        metadata: { name: "meter", namespace: lab },
        spec: meterSpec,
      },
    ];
    const rendered = await cli(["render", "-"], {
      env: stackVariables(inject("stack")),
      stdin: manifests.map((m) => JSON.stringify(m)).join("\n---\n"),
    });
    expect(rendered).toMatchObject({ code: 0, stderr: "" });

    // The API server assigns the uids the rendering leaves as placeholders.
    const uid = async (args: string[]) =>
      (await kubectl(["get", ...args, "-o", "jsonpath={.metadata.uid}"])).stdout;
    const uids = {
      [uidPlaceholder("Tenant", tenant)]: await uid(["tenant", tenant]),
      [uidPlaceholder("Device", `${tenant}/gw`)]: await uid(["device", "gw", "-n", tenant]),
      [uidPlaceholder("Device", `${lab}/meter`)]: await uid(["device", "meter", "-n", lab]),
    };
    let text = rendered.stdout;
    for (const [placeholder, value] of Object.entries(uids)) text = text.replaceAll(placeholder, value);
    const objects = parseAllDocuments(text).map((d) => d.toJS() as Manifest);

    for (const object of objects) {
      const found = await live(object);
      if (object.kind === "Secret") {
        // Key material is made at run time: the Secret's shape is what render promises.
        const { data, ...rest } = object as Manifest & { data: Record<string, string> };
        expect(found).toMatchObject(rest);
        expect(Object.keys(found.data as object).sort()).toEqual(Object.keys(data).sort());
      } else {
        expect(found, `${object.kind} ${object.metadata.name}`).toMatchObject(object);
      }
    }

    // Nothing the operator made for the tenant is missing from the rendering.
    const renderedNames = new Set(
      objects.map((o) => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`),
    );
    for (const kind of KINDS_BY_TENANT_LABEL) {
      const list = await kubectl([
        "get",
        kind,
        "-A",
        "-l",
        `iot.tenant-operator.io/tenant=${tenant}`,
        "-o",
        "json",
      ]);
      const items = (JSON.parse(list.stdout) as { items: Manifest[] }).items;
      for (const item of items)
        expect(renderedNames).toContain(
          `${item.kind}/${item.metadata.namespace ?? ""}/${item.metadata.name}`,
        );
    }
    for (const ns of [tenant, lab]) {
      const secrets = await kubectl([
        "get",
        "secrets",
        "-n",
        ns,
        "-l",
        "iot.tenant-operator.io/tenant",
        "-o",
        "name",
      ]);
      for (const name of secrets.stdout.split("\n").filter(Boolean))
        expect(renderedNames).toContain(`Secret/${ns}/${name.replace("secret/", "")}`);
    }

    // The broker holds exactly the grants render shows, in the same words.
    const admin = await DynsecClient.connect(adminConnection(inject("stack").broker));
    try {
      for (const device of ["gw", "meter"]) {
        const owner = `iot:${tenant}:${device}`;
        const block = text.split(`# broker grants of ${owner} `)[1]?.split("#   anything else")[0] ?? "";
        const shown = block
          .split("\n")
          .slice(1)
          .filter(Boolean)
          .map((l) => l.replace(/^# /, ""));
        const role = (await admin.run({ command: "getRole", rolename: owner })) as {
          role: { acls: Array<{ acltype: string; topic: string; priority: number; allow: boolean }> };
        };
        const clients = (await admin.run({ command: "listClients", verbose: true })) as {
          clients: Array<{ username: string; textname?: string }>;
        };
        const client = clients.clients.find((c) => c.textname === owner);
        expect(shown.filter((l) => !l.startsWith("  client")).sort()).toEqual(
          role.role.acls.map(grantLine).sort(),
        );
        const clientLine = shown.find((l) => l.startsWith("  client"));
        if (client) expect(clientLine).toContain(`client    ${client.username} (`);
        else expect(clientLine).toMatch(/client {4}none: the device is disabled/);
      }
    } finally {
      await admin.close();
    }
  });
});
