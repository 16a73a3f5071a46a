import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { krewArchiveName, krewManifest } from "./krew.js";

const release = {
  version: "1.2.3",
  uri: "https://github.com/example/iot-tenant-operator/releases/download/v1.2.3/kubectl-iot-v1.2.3.tar.gz",
  sha256: "a".repeat(64),
};

describe("the krew manifest of kubectl iot", () => {
  it("has the fields krew requires, the archive's hash on every platform", () => {
    const manifest = krewManifest(release) as {
      metadata: { name: string };
      spec: Record<string, unknown> & { platforms: Array<Record<string, unknown>> };
    };
    expect(manifest).toMatchObject({
      apiVersion: "krew.googlecontainertools.github.com/v1alpha2",
      kind: "Plugin",
      metadata: { name: "iot" },
      spec: { version: "v1.2.3", homepage: "https://github.com/example/iot-tenant-operator" },
    });
    expect(manifest.spec.shortDescription).toBeTruthy();
    expect(manifest.spec.platforms.length).toBeGreaterThan(0);
    for (const platform of manifest.spec.platforms)
      expect(platform).toMatchObject({ uri: release.uri, sha256: release.sha256, bin: "kubectl-iot" });
    expect(krewArchiveName("1.2.3")).toBe("kubectl-iot-v1.2.3.tar.gz");
  });

  it.each(["", "placeholder", "A".repeat(64), "a".repeat(63)])("refuses %j as a sha256", (sha256) => {
    expect(() => krewManifest({ ...release, sha256 })).toThrow(/not a sha256/);
  });

  it("is committed as the release script writes it, with a real hash", async () => {
    const committed = parse(await readFile(join(import.meta.dirname, "../../plugins/iot.yaml"), "utf8"));
    const { version, uri, sha256 } = {
      ...committed.spec.platforms[0],
      version: committed.spec.version.slice(1),
    };
    expect(committed).toEqual(krewManifest({ version, uri, sha256 }));
  });
});
