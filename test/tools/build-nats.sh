#!/usr/bin/env bash
# Builds nats-server from the Go module pinned in nats/go.mod (a `tool` directive) into a
# cache outside the repo keyed by that pin and the Go version, next to build.sh's cache.
# Prints the directory holding the binary. A warm cache returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

nats_version="$(cd "$here/nats" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)"
key="$( { go version; cat "$here/build-nats.sh" "$here/nats/go.mod" "$here/nats/go.sum"; } | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/nats-$nats_version-$key"

if [[ -x "$out/nats-server" ]]; then echo "$out"; exit 0; fi

work="$out.partial"
mkdir -p "$work"
echo "[build-nats] building nats-server $nats_version into $out" >&2
t0=$SECONDS
cd "$here/nats"
go build -trimpath -ldflags="-s -w" -o "$work/nats-server" github.com/nats-io/nats-server/v2
echo "[build-nats] nats-server built in $((SECONDS - t0))s" >&2
rm -rf "$out" && mv "$work" "$out"
echo "$out"
