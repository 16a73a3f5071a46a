/**
 * The krew plugin manifest of `kubectl iot`. The plugin is one JavaScript bundle (the same CLI as
 * the package's `iot-tenant-operator`) with a shell launcher, so one archive serves every Unix
 * platform; it needs Node.js 24 on PATH. `npm run krew:release` builds the archive and fills in
 * its URL and sha256.
 */

export const KREW_PLUGIN = "iot";
/** The platforms the launcher script runs on; Windows would need its own launcher. */
const PLATFORMS = ["linux", "darwin"] as const;

export interface KrewRelease {
  readonly version: string;
  /** Where the release archive is downloaded from. */
  readonly uri: string;
  /** sha256 of that archive, hex. */
  readonly sha256: string;
}

export function krewArchiveName(version: string): string {
  return `kubectl-${KREW_PLUGIN}-v${version}.tar.gz`;
}

export function krewManifest(release: KrewRelease): object {
  if (!/^[0-9a-f]{64}$/.test(release.sha256)) throw new Error(`not a sha256: ${release.sha256}`);
  return {
    apiVersion: "krew.googlecontainertools.github.com/v1alpha2",
    kind: "Plugin",
    metadata: { name: KREW_PLUGIN },
    spec: {
      version: `v${release.version}`,
      homepage: release.uri.replace(/\/releases\/download\/.*$/, ""),
      shortDescription: "Check and feed IoT tenant isolation (iot-tenant-operator)",
      description:
        "The command line of iot-tenant-operator as a kubectl plugin: verify that no IoT tenant can reach " +
        "another on the cluster and the MQTT broker, render what Tenants and Devices become, and import " +
        "Devices in bulk from a CSV file.",
      caveats: "Needs Node.js 24 or later on PATH (node --version).\n",
      platforms: PLATFORMS.map((os) => ({
        selector: { matchLabels: { os } },
        uri: release.uri,
        sha256: release.sha256,
        bin: `kubectl-${KREW_PLUGIN}`,
      })),
    },
  };
}
