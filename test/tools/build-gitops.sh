#!/usr/bin/env bash
# Builds gitops-health (gitops/main.go: Argo CD's Lua health checks run by gopher-lua, and kstatus'
# Compute) from the module pinned in gitops/go.mod into a cache outside the repo keyed by the source,
# the pins and the Go version, next to build.sh's cache. Prints the directory holding the binary.
# A warm cache returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

key="$( { go version; cat "$here/build-gitops.sh" "$here/gitops/go.mod" "$here/gitops/go.sum" "$here/gitops/main.go"; } | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/gitops-health-$key"

if [[ -x "$out/gitops-health" ]]; then echo "$out"; exit 0; fi

work="$out.partial"
mkdir -p "$work"
echo "[build-gitops] building gitops-health into $out" >&2
t0=$SECONDS
cd "$here/gitops"
go build -trimpath -ldflags="-s -w" -o "$work/gitops-health" .
echo "[build-gitops] gitops-health built in $((SECONDS - t0))s" >&2
rm -rf "$out" && mv "$work" "$out"
echo "$out"
