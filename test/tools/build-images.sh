#!/usr/bin/env bash
# Builds the node's OCI images without a registry or a container engine: each image is a root
# filesystem assembled here, packed as one deterministic layer into an OCI archive that
# `ctr images import` loads. pause: the pod sandbox (images/pause). probe: busybox-static
# (sh, nc, wget) plus images/netprobe for TCP and UDP outcomes. coredns: the binary that
# build-node.sh builds. operator and mosquitto (the broker build-mosquitto.sh builds):
# scripts/image-rootfs.sh (which the Dockerfile uses too). Cached outside the repo, keyed by
# everything that goes in: these scripts, the Go and app sources, the npm lockfile, the
# Debian package versions and the Go version.
# Prints the directory holding <name>.tar and refs (one "name reference" line per image).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

repo="$(cd "$here/../.." && pwd)"
node_bin="$(bash "$here/build-node.sh")"
inputs() {
  go version
  echo "$node_bin"
  bash "$here/build-mosquitto.sh"
  dpkg-query -W -f '${Version}\n' busybox-static libc6 libssl3 libcjson1
  cat "$here/build-images.sh" "$here/images/go.mod" "$here"/images/*/main.go "$repo/scripts/image-rootfs.sh"
  (cd "$repo" && find src bin -type f ! -name '*.test.ts' | sort | xargs cat && cat package.json package-lock.json tsconfig.json tsconfig.build.json)
}
key="$(inputs | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/images-$key"
if [[ -f "$out/refs" ]]; then echo "$out"; exit 0; fi

work="$out.partial"
rm -rf "$work" && mkdir -p "$work/build" "$cache_root"
log() { echo "[build-images] $*" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# oci_image NAME ROOTFS CONFIG: writes $work/NAME.tar, an OCI archive of one layer, named
# localhost/iot-NAME:$key (the tag is the cache key, so a changed image never hides behind an old one).
oci_image() {
  local name="$1" rootfs="$2" config="$3"
  local dir="$work/build/$name-oci" ref="localhost/iot-$name:$key"
  mkdir -p "$dir/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$dir/layer.tar" .
  local diff_id; diff_id="$(sha "$dir/layer.tar")"
  gzip -n "$dir/layer.tar"
  local layer; layer="$(sha "$dir/layer.tar.gz")"
  mv "$dir/layer.tar.gz" "$dir/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$config" "$diff_id" > "$dir/config.json"
  local cfg; cfg="$(sha "$dir/config.json")"
  mv "$dir/config.json" "$dir/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$cfg" "$(stat -c%s "$dir/blobs/sha256/$cfg")" "$layer" "$(stat -c%s "$dir/blobs/sha256/$layer")" > "$dir/manifest.json"
  local manifest; manifest="$(sha "$dir/manifest.json")"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$(stat -c%s "$dir/manifest.json")" "$ref" "$key" > "$dir/index.json"
  mv "$dir/manifest.json" "$dir/blobs/sha256/$manifest"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$work/$name.tar" oci-layout index.json blobs
  echo "$name $ref" >> "$work/refs"
  log "$ref: $(du -h "$work/$name.tar" | cut -f1)"
}

go build -C "$here/images" -trimpath -ldflags="-s -w" -o "$work/build/bin/" ./pause ./netprobe

pause="$work/build/pause-root"
mkdir -p "$pause"
cp "$work/build/bin/pause" "$pause/pause"
oci_image pause "$pause" '{"User":"65535:65535","Entrypoint":["/pause"]}'

probe="$work/build/probe-root"
mkdir -p "$probe/bin" "$probe/tmp"
chmod 1777 "$probe/tmp"
cp /bin/busybox "$work/build/bin/netprobe" "$probe/bin/"
for applet in sh nc wget sleep cat ls ip nslookup tail; do ln -s busybox "$probe/bin/$applet"; done
oci_image probe "$probe" '{"User":"65534:65534","Env":["PATH=/bin"],"Entrypoint":["/bin/netprobe"],"Cmd":["serve","8080"]}'

coredns="$work/build/coredns-root"
mkdir -p "$coredns"
cp "$node_bin/coredns" "$coredns/coredns"
oci_image coredns "$coredns" '{"User":"65532:65532","Entrypoint":["/coredns"],"Cmd":["-conf","/etc/coredns/Corefile"]}'

(cd "$repo" && npm run --silent build >&2)
bash "$repo/scripts/image-rootfs.sh" operator "$work/build/operator-root"
oci_image operator "$work/build/operator-root" '{"User":"65532:65532","Env":["LD_PRELOAD=/usr/local/lib/libjemalloc.so.2"],"WorkingDir":"/app","Entrypoint":["/usr/local/bin/node","/app/bin/iot-tenant-operator.js"],"Cmd":["run"]}'

bash "$repo/scripts/image-rootfs.sh" mosquitto "$work/build/mosquitto-root"
oci_image mosquitto "$work/build/mosquitto-root" '{"User":"1883:1883","Entrypoint":["/usr/sbin/mosquitto"],"Cmd":["-c","/mosquitto/config/mosquitto.conf"]}'

rm -rf "$work/build" "$out" && mv "$work" "$out"
echo "$out"
