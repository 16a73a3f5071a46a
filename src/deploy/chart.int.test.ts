import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { helm } from "../../test/support/helm.js";
import { uniqueName } from "../../test/support/kube.js";
import { kubectl } from "../../test/support/kubectl.js";
import { CHART_DIR } from "./chart.js";

const _run = promisify(execFile);

describe("the Helm chart", () => {
  it("lints clean", async () => {
    const stdout = await helm(["lint", "--strict", CHART_DIR]);
    expect(stdout).toContain("0 chart(s) failed");
  });

  it("renders objects the real API server accepts, with a restricted operator pod", async () => {
    const namespace = uniqueName("chart");
    expect((await kubectl(["create", "namespace", namespace])).ok).toBe(true);
    await kubectl(["label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"]);
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
      "validatingadmissionpolicy.admissionregistration.k8s.io/iot-tenant-guard",
      "deployment.apps/iot-tenant-operator",
      "configmap/iot-mosquitto-config",
      "networkpolicy.networking.k8s.io/iot-mosquitto",
      "certificate.cert-manager.io/iot-broker-tls",
    ]) {
      expect(applied.stdout).toContain(`${object} serverside-applied`);
    }
  });
});
