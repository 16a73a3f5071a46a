import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { buildWith } from "../harness/stack.js";

const run = promisify(execFile);

interface Image {
  readonly config: {
    readonly User?: string;
    readonly WorkingDir?: string;
    readonly Entrypoint?: readonly string[];
    readonly Env?: readonly string[];
    readonly Cmd?: readonly string[];
  };
  /** "<type and mode> <uid>/<gid> <path>[ -> <link target>]" per entry of its layers, timestamps left out. */
  readonly files: readonly string[];
  /** Regular files' sizes by path. */
  readonly sizes: ReadonlyMap<string, number>;
}

/** An OCI archive's image: its config and what its layers hold, as `tar -tv` lists it. */
async function readImage(archive: string): Promise<Image> {
  const dir = await mkdtemp(join(tmpdir(), "iot-image-"));
  try {
    await run("tar", ["-xf", archive, "-C", dir]);
    const blob = async (digest: string) => join(dir, "blobs", ...digest.split(":"));
    const json = async (digest: string) => JSON.parse(await readFile(await blob(digest), "utf8"));
    const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8"));
    const manifest = await json(index.manifests[0].digest);
    const { config } = await json(manifest.config.digest);
    const files: string[] = [];
    const sizes = new Map<string, number>();
    for (const layer of manifest.layers) {
      const { stdout } = await run("tar", ["-tv", "--numeric-owner", "-f", await blob(layer.digest)], {
        maxBuffer: 256 << 20,
      });
      for (const line of stdout.split("\n").filter(Boolean)) {
        // "-rw-r--r-- 0/0    1234 1970-01-01 00:00 ./app/package.json"
        const [mode, owner, size, , , ...rest] = line.split(/\s+/);
        const path = rest.join(" ").replace(/^\.?\//, "").replace(/\/$/, "");
        if (!path) continue;
        files.push(`${mode} ${owner} ${path}`);
        if (mode?.startsWith("-")) sizes.set(path, Number(size));
      }
    }
    return { config, files: files.sort(), sizes };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The Dockerfile users' CI builds, built for real here (test/tools/build-dockerfile.sh: buildah,
 * a debian:bookworm-slim made by mmdebstrap, no Docker, no registry), yields the operator image
 * the node tests run (test/tools/build-images.sh).
 */
describe("the Dockerfile yields the operator image the tests run", () => {
  let built: Image;
  let tested: Image;

  beforeAll(async () => {
    const [dockerfile, images] = await Promise.all([
      buildWith("build-dockerfile.sh"),
      buildWith("build-images.sh"),
    ]);
    [built, tested] = await Promise.all([
      readImage(join(dockerfile, "operator.tar")),
      readImage(join(images, "operator.tar")),
    ]);
  }, 40 * 60_000);

  it("holds the same files, with the same modes, owners and link targets", () => {
    expect(built.files).toEqual(tested.files);
  });

  it("holds the app's files byte for byte the same size (the libraries come from each build's Debian)", () => {
    const app = (image: Image) =>
      [...image.sizes].filter(([path]) => path.startsWith("app/") || path === "usr/local/bin/node");
    expect(app(built)).toEqual(app(tested));
  });

  it("runs the same entrypoint and command as the same user in the same directory, with jemalloc preloaded", () => {
    const runtime = ({ config }: Image) => ({
      User: config.User,
      WorkingDir: config.WorkingDir,
      Entrypoint: config.Entrypoint,
      Cmd: config.Cmd,
      Preload: config.Env?.filter((variable) => variable.startsWith("LD_PRELOAD=")),
    });
    expect(runtime(built)).toEqual(runtime(tested));
    expect(runtime(tested)).toEqual({
      User: "65532:65532",
      WorkingDir: "/app",
      Entrypoint: ["/usr/local/bin/node", "/app/bin/iot-tenant-operator.js"],
      Cmd: ["run"],
      Preload: ["LD_PRELOAD=/usr/local/lib/libjemalloc.so.2"],
    });
  });
});
