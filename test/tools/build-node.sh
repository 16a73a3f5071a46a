#!/usr/bin/env bash
# Builds the test node's Go binaries: kubelet, kube-proxy and kube-scheduler (the control
# plane needs one once Pods run) from the k8s.io/kubernetes module pinned in k8s/
# (through k8s/node.mod, which adds only the checksums these need,
# so the control plane's go.mod and cache key stay untouched), and kube-router (its network
# policy controller enforces NetworkPolicy) from kube-router/, and CoreDNS (cluster DNS, a
# project-owned main with the plugins it needs) from coredns/. Cached outside the repo,
# keyed by these pins and the Go version. Prints the directory holding the binaries.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

k8s_version="$(cd "$here/k8s" && go list -modfile=node.mod -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
kr_version="$(cd "$here/kube-router" && go list -m -f '{{.Version}}' github.com/cloudnativelabs/kube-router/v2)"

key="$( { go version; cat "$here/build-node.sh" "$here/k8s/node.mod" "$here/k8s/node.sum" "$here/kube-router/go.mod" "$here/kube-router/go.sum" "$here/coredns/go.mod" "$here/coredns/go.sum" "$here/coredns/main.go"; } | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/node-$key"
binaries=(kubelet kube-proxy kube-scheduler kube-router coredns)

complete() { for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
if complete; then echo "$out"; exit 0; fi

work="$out.partial"
mkdir -p "$work" "$cache_root"
log() { echo "[build-node] $*" >&2; }
timed() { local name="$1"; shift; local t0=$SECONDS; "$@"; log "$name built in $((SECONDS - t0))s"; }

k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean -X $p.gitCommit=go-module-build -X $p.buildDate=1970-01-01T00:00:00Z"
done

log "building node $k8s_version (kubelet, kube-proxy, kube-scheduler), kube-router $kr_version into $out"
cd "$here/k8s"
[[ -x "$work/kubelet" ]] || timed kubelet go build -modfile=node.mod -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kubelet" k8s.io/kubernetes/cmd/kubelet
[[ -x "$work/kube-proxy" ]] || timed kube-proxy go build -modfile=node.mod -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
[[ -x "$work/kube-scheduler" ]] || timed kube-scheduler go build -modfile=node.mod -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
cd "$here/kube-router"
[[ -x "$work/kube-router" ]] || timed kube-router go build -trimpath -ldflags="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$kr_version" -o "$work/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
cd "$here/coredns"
[[ -x "$work/coredns" ]] || timed coredns go build -trimpath -ldflags="-s -w" -o "$work/coredns" .

rm -rf "$out" && mv "$work" "$out"
echo "$out"
