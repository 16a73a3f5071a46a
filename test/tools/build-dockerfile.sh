#!/usr/bin/env bash
# Builds the project's Dockerfile for real, without Docker or a registry, so that the image users'
# CI would build is checked against the one test/tools/build-images.sh makes:
#   1. debian:bookworm-slim, made here: `mmdebstrap --variant=minbase` from the Debian mirrors apt
#      uses on this machine, imported into a containers-storage of its own (vfs driver) under the
#      name the Dockerfile's FROM resolves to, docker.io/library/debian:bookworm-slim;
#   2. `buildah bud --pull=never` (chroot isolation) of the Dockerfile. Its RUN steps reach the
#      Debian mirror and the npm registry as this machine does; when this machine's npm trusts an
#      extra CA file (npm config cafile, e.g. for a TLS-intercepting egress proxy), the build's npm
#      is given the same file through bind mounts, which are no part of the image.
# Cached outside the repo like the other builds: the base keyed by this script, the mirrors and
# mmdebstrap's version; the image by the base, the Dockerfile, the files it copies and buildah's
# version. Prints the directory holding operator.tar (an OCI archive of the built image).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
log() { echo "[build-dockerfile] $*" >&2; }

# The one-line "deb URI SUITE COMPONENTS" form of this machine's Debian bookworm sources.
mirrors() {
  apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' 2>/dev/null |
    grep -E '/debian(-security)?/ bookworm' | sort -u | sed 's/^/deb /'
}
mapfile -t sources < <(mirrors)
((${#sources[@]})) || { echo "[build-dockerfile] no Debian bookworm source in apt's configuration" >&2; exit 1; }

base_key="$( { cat "$here/build-dockerfile.sh"; printf '%s\n' "${sources[@]}"; dpkg-query -W -f '${Version}\n' mmdebstrap; } | sha256sum | cut -c1-16)"
inputs() {
  echo "$base_key"
  dpkg-query -W -f '${Version}\n' buildah
  cd "$repo"
  cat Dockerfile package.json package-lock.json tsconfig.json tsconfig.build.json scripts/image-rootfs.sh
  find bin src -type f | sort | xargs cat
}
key="$(inputs | sha256sum | cut -c1-16)"
out="$cache_root/dockerfile-$key"
if [[ -f "$out/operator.tar" ]]; then echo "$out"; exit 0; fi

work="$cache_root/dockerfile-work"
storage=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
# The base's root filesystem, kept as a directory that `buildah add` copies into an empty image.
base="$cache_root/debian-bookworm-slim-$base_key"
mkdir -p "$cache_root"
if [[ ! -d "$base" ]]; then
  log "debian:bookworm-slim from ${sources[*]}"
  rm -rf "$base.partial"
  mmdebstrap --quiet --variant=minbase --format=directory bookworm "$base.partial" "${sources[@]}" >&2
  mv "$base.partial" "$base"
fi
# The storage holds nothing but this build's images: a fresh one each time is the simplest cache.
rm -rf "$work" && mkdir -p "$work"
container="$(buildah "${storage[@]}" from scratch)"
buildah "${storage[@]}" add "$container" "$base" / >/dev/null
buildah "${storage[@]}" config --cmd bash "$container"
buildah "${storage[@]}" commit --quiet --rm "$container" docker.io/library/debian:bookworm-slim >/dev/null

trust=()
cafile="$(npm config get cafile 2>/dev/null || true)"
if [[ -f "$cafile" ]]; then
  echo "cafile=/etc/ssl/certs/build-host-ca.crt" > "$work/npmrc"
  trust=(-v "$cafile:/etc/ssl/certs/build-host-ca.crt:ro" -v "$work/npmrc:/root/.npmrc:ro")
fi
log "buildah bud of $repo/Dockerfile into $out"
(cd "$repo" && buildah "${storage[@]}" bud --quiet --pull=never --isolation=chroot "${trust[@]}" \
  -t localhost/iot-tenant-operator:dockerfile -f Dockerfile . >&2)
mkdir -p "$out.partial"
buildah "${storage[@]}" push --quiet localhost/iot-tenant-operator:dockerfile "oci-archive:$out.partial/operator.tar" >&2
rm -rf "$work" "$out" && mv "$out.partial" "$out"
echo "$out"
