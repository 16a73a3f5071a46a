import { ApiextensionsV1Api, CoreV1Api, Watch } from "@kubernetes/client-node";
import { describe, expect, inject, it } from "vitest";
import { adminKubeConfig, eventually, objectApi, uniqueName } from "../support/kube.js";
import { httpsGet } from "./http.js";

const isNotFound = (error: unknown) => (error as { code?: number }).code === 404;

describe("the real control plane", () => {
  const kc = adminKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);

  it("reports the Kubernetes version it was built from", async () => {
    const stack = inject("stack");
    const res = await httpsGet(`${stack.server}/version`, {
      caFile: `${stack.stateDir}/pki/kubernetes-ca.crt`,
    });
    expect(JSON.parse(res.body)).toMatchObject({ gitVersion: "v1.36.3", major: "1", minor: "36" });
  });

  it("serves a new CRD and delivers a watch event for a custom object", async () => {
    const plural = uniqueName("gadgets").replace("-", "");
    const group = "smoke.example.com";
    await kc.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({
      body: {
        metadata: { name: `${plural}.${group}` },
        spec: {
          group,
          scope: "Namespaced",
          names: { plural, singular: plural.slice(0, -1), kind: "Gadget", listKind: "GadgetList" },
          versions: [
            {
              name: "v1",
              served: true,
              storage: true,
              schema: {
                openAPIV3Schema: {
                  type: "object",
                  properties: { spec: { type: "object", properties: { size: { type: "integer" } } } },
                },
              },
            },
          ],
        },
      },
    });
    const path = `/apis/${group}/v1/namespaces/default/${plural}`;
    await eventually("CRD served", async () =>
      (await objectApi().list(`${group}/v1`, "Gadget", "default")) ? true : undefined,
    );

    const events: Array<{ type: string; name: string; size: number }> = [];
    const watcher = await new Watch(kc).watch(
      path,
      {},
      (type, obj: { metadata: { name: string }; spec: { size: number } }) =>
        events.push({ type, name: obj.metadata.name, size: obj.spec.size }),
      () => {},
    );
    try {
      await objectApi().create({
        apiVersion: `${group}/v1`,
        kind: "Gadget",
        metadata: { name: "g1", namespace: "default" },
        spec: { size: 3 },
      } as never);
      const added = await eventually("ADDED event", async () => events.find((e) => e.type === "ADDED"));
      expect(added).toEqual({ type: "ADDED", name: "g1", size: 3 });
    } finally {
      watcher.abort();
    }
  });

  it("deletes a namespace with everything in it (namespace controller)", async () => {
    const ns = uniqueName("smoke-ns");
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: "cm" }, data: { a: "b" } },
    });
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: "s" }, stringData: { k: "v" } },
    });
    await core.deleteNamespace({ name: ns });
    await eventually(
      "namespace gone",
      async () => {
        try {
          await core.readNamespace({ name: ns });
          return undefined;
        } catch (error) {
          return isNotFound(error) ? true : undefined;
        }
      },
      60_000,
    );
  });

  it("collects an object whose owner was deleted (garbage collector)", async () => {
    const owner = await core.createNamespacedConfigMap({
      namespace: "default",
      body: { metadata: { name: uniqueName("owner") } },
    });
    const dependent = uniqueName("dependent");
    await core.createNamespacedConfigMap({
      namespace: "default",
      body: {
        metadata: {
          name: dependent,
          ownerReferences: [
            {
              apiVersion: "v1",
              kind: "ConfigMap",
              name: owner.metadata?.name ?? "",
              uid: owner.metadata?.uid ?? "",
            },
          ],
        },
      },
    });
    await core.deleteNamespacedConfigMap({ namespace: "default", name: owner.metadata?.name ?? "" });
    await eventually(
      "dependent collected",
      async () => {
        try {
          await core.readNamespacedConfigMap({ namespace: "default", name: dependent });
          return undefined;
        } catch (error) {
          return isNotFound(error) ? true : undefined;
        }
      },
      60_000,
    );
  });
});
