import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { helm } from "../../test/support/helm.js";
import { uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { TENANT_POLICY_PARAMS } from "../desired/cluster.js";
import { CHART_DIR } from "./chart.js";

interface Rendered {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: { template?: { spec?: { containers: Array<{ securityContext?: object }> } } };
}

const render = async (namespace: string, args: string[] = []) =>
  parseAllDocuments(
    await helm(["template", "iot", CHART_DIR, "--namespace", namespace, "--include-crds", ...args]),
  )
    .map((d) => d.toJS() as Rendered | null)
    .filter((o): o is Rendered => o !== null);

describe("the Helm chart", () => {
  it("lints clean", async () => {
    const stdout = await helm(["lint", "--strict", CHART_DIR]);
    expect(stdout).toContain("0 chart(s) failed");
  });

  it("refuses values that do not fit its schema, naming the field", async () => {
    const cases: Array<[set: string, message: string]> = [
      ["replicas=two", "at '/replicas': got string, want integer"],
      ["replicas=0", "at '/replicas': minimum: got 0, want 1"],
      [
        "image.pullPolicy=Sometimes",
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
      ],
      ["broker.mtlsPort=70000", "at '/broker/mtlsPort': maximum: got 70,000, want 65,535"],
      ["tenantPolicy.serviceTypes=Ingress", "at '/tenantPolicy/serviceTypes'"],
      ["brokr.host=x", "additional properties 'brokr' not allowed"],
    ];
    for (const [set, message] of cases) {
      await expect(helm(["template", "iot", CHART_DIR, "--set", set]), set).rejects.toThrow(message);
    }
    // Twin: the same fields with fitting values render.
    const ok = await helm([
      "template",
      "iot",
      CHART_DIR,
      "--set",
      "replicas=3,image.pullPolicy=Never,broker.mtlsPort=8883,tenantPolicy.serviceTypes=ClusterIP\\,NodePort",
    ]);
    expect(ok).toContain("replicas: 3");
  });

  it("renders a ServiceMonitor only when asked", async () => {
    expect(await helm(["template", "iot", CHART_DIR])).not.toContain("kind: ServiceMonitor");
    expect(
      await helm(["template", "iot", CHART_DIR, "--set", "metrics.serviceMonitor.enabled=true"]),
    ).toContain("kind: ServiceMonitor");
  });

  it("renders objects the real API server accepts", async () => {
    const namespace = uniqueName("chart");
    expect((await kubectl(["create", "namespace", namespace])).ok).toBe(true);
    const rendered = await helm(["template", "iot", CHART_DIR, "--namespace", namespace, "--include-crds"]);
    const applied = await kubectl(
      [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-test",
        "--dry-run=server",
        "-f",
        "-",
      ],
      { stdin: rendered },
    );
    expect(applied.stderr).toBe("");
    for (const object of [
      "customresourcedefinition.apiextensions.k8s.io/tenants.iot.tenant-operator.io",
      `serviceaccount/iot-tenant-operator`,
      "clusterrole.rbac.authorization.k8s.io/iot-tenant-operator",
      "clusterrole.rbac.authorization.k8s.io/iot-tenant-admin",
      `configmap/${TENANT_POLICY_PARAMS}`,
      "validatingadmissionpolicy.admissionregistration.k8s.io/iot-tenant-guard",
      "deployment.apps/iot-tenant-operator",
      "service/iot-tenant-operator-metrics",
      "configmap/iot-mosquitto-config",
      "networkpolicy.networking.k8s.io/iot-mosquitto",
      "certificate.cert-manager.io/iot-broker-tls",
    ]) {
      expect(applied.stdout).toContain(`${object} serverside-applied`);
    }
  });

  it("runs the operator in a pod that the restricted Pod Security level admits", async () => {
    const namespace = uniqueName("chart");
    expect((await kubectl(["create", "namespace", namespace])).ok).toBe(true);
    const labelled = await kubectl([
      "label",
      "namespace",
      namespace,
      "pod-security.kubernetes.io/enforce=restricted",
    ]);
    expect(labelled.stderr).toBe("");
    expect(labelled.ok).toBe(true);
    const deployment = (await render(namespace)).find((o) => o.kind === "Deployment");
    const template = deployment?.spec?.template;
    expect(template?.spec).toBeDefined();
    const pod = (spec: object) =>
      JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: uniqueName("operator"), namespace },
        spec,
      });
    // The API server's answer is the evidence; the ServiceAccount need not exist for a dry run.
    const admitted = await kubectl(["create", "--dry-run=server", "-f", "-"], {
      stdin: pod({ ...template?.spec, automountServiceAccountToken: false }),
    });
    expect(admitted.stderr).toBe("");
    expect(admitted.ok).toBe(true);
    const privileged = template?.spec?.containers.map((c) => ({
      ...c,
      securityContext: { ...c.securityContext, capabilities: { drop: ["ALL"], add: ["NET_ADMIN"] } },
    }));
    const refused = await kubectl(["create", "--dry-run=server", "-f", "-"], {
      stdin: pod({ ...template?.spec, automountServiceAccountToken: false, containers: privileged }),
    });
    expect(refused.ok).toBe(false);
    expect(refused.stderr).toMatch(/violates PodSecurity "restricted:latest": .*NET_ADMIN/);
  });

  it("carries the platform's tenant allow-lists from its values to the admission policy's parameters", async () => {
    const defaults = (await render("iot-system")).find((o) => o.metadata.name === TENANT_POLICY_PARAMS);
    expect(defaults?.data).toEqual({ priorityClasses: "", serviceTypes: "ClusterIP", ingressDomain: "" });
    const set = (
      await render("iot-system", [
        "--set-string",
        "tenantPolicy.priorityClasses=tenant-low\\,tenant-high",
        "--set-string",
        "tenantPolicy.serviceTypes=ClusterIP\\,LoadBalancer",
        "--set",
        "tenantPolicy.ingressDomain=apps.example.com",
      ])
    ).find((o) => o.metadata.name === TENANT_POLICY_PARAMS);
    expect(set?.data).toEqual({
      priorityClasses: "tenant-low,tenant-high",
      serviceTypes: "ClusterIP,LoadBalancer",
      ingressDomain: "apps.example.com",
    });
  });
});
