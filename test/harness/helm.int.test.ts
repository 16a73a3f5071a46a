import { execFile } from "node:child_process";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CoreV1Api } from "@kubernetes/client-node";
import { describe, expect, it } from "vitest";
import { helm } from "../support/helm.js";
import { adminKubeConfig, uniqueName } from "../support/kube.js";

const _run = promisify(execFile);

async function tinyChart(): Promise<string> {
  const chart = await mkdtemp(join(tmpdir(), "chart-"));
  await mkdir(join(chart, "templates"));
  await writeFile(
    join(chart, "Chart.yaml"),
    'apiVersion: v2\nname: tiny\nversion: 0.1.0\nkubeVersion: ">= 1.30.0-0"\n',
  );
  await writeFile(join(chart, "values.yaml"), "greeting: hello\n");
  await writeFile(
    join(chart, "templates/configmap.yaml"),
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
  );
  return chart;
}

describe("helm built from its module", () => {
  it("renders a tiny chart and installs it into the cluster", async () => {
    const chart = await tinyChart();

    const rendered = await helm(["template", "demo", chart, "--set", "greeting=hi"]);
    expect(rendered).toContain("name: demo-greeting");
    expect(rendered).toContain('greeting: "hi"');

    const ns = uniqueName("smoke-helm");
    await helm(["install", "tiny", chart, "--namespace", ns, "--create-namespace"]);
    const cm = await adminKubeConfig()
      .makeApiClient(CoreV1Api)
      .readNamespacedConfigMap({ namespace: ns, name: "tiny-greeting" });
    expect(cm.data).toEqual({ greeting: "hello" });
  });
});
