#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kubectl, cert-manager controller, helm) from the Go modules pinned beside this script,
# into a cache outside the repo keyed by those pins and the Go version.
# Prints the directory holding the binaries. A warm cache returns at once.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

k8s_version="$(cd "$here/k8s" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
cm_version="$(cd "$here/cert-manager" && go list -m -f '{{.Version}}' github.com/cert-manager/cert-manager)"
helm_version="$(cd "$here/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"

key="$( { go version; cat "$here/build.sh"; for m in k8s cert-manager helm; do cat "$here/$m/go.mod" "$here/$m/go.sum"; done; cat "$here/cert-manager/main.go"; } | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/bin-$key"
binaries=(etcd kube-apiserver kube-controller-manager kubectl cert-manager-controller helm)

complete() { for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done; }
if complete; then echo "$out"; exit 0; fi

work="$out.partial"
mkdir -p "$work" "$cache_root"
log() { echo "[build-tools] $*" >&2; }
timed() { local name="$1"; shift; local t0=$SECONDS; "$@"; log "$name built in $((SECONDS - t0))s"; }

k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor -X $p.gitTreeState=clean -X $p.gitCommit=go-module-build -X $p.buildDate=1970-01-01T00:00:00Z"
done

log "building control plane $k8s_version, cert-manager $cm_version, helm $helm_version into $out"
cd "$here/k8s"
[[ -x "$work/kube-apiserver" ]] || timed kube-apiserver go build -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
[[ -x "$work/kube-controller-manager" ]] || timed kube-controller-manager go build -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
[[ -x "$work/kubectl" ]] || timed kubectl go build -trimpath -tags=notest -ldflags="$k8s_ldflags" -o "$work/kubectl" k8s.io/kubernetes/cmd/kubectl
[[ -x "$work/etcd" ]] || timed etcd go build -trimpath -ldflags="-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3
cd "$here/cert-manager"
[[ -x "$work/cert-manager-controller" ]] || timed cert-manager-controller go build -trimpath -ldflags="-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$cm_version" -o "$work/cert-manager-controller" .
cd "$here/helm"
# Offline rendering (helm template, lint) assumes this Kubernetes version instead of helm's default 1.20.
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
[[ -x "$work/helm" ]] || timed helm go build -trimpath -ldflags="$helm_ldflags" -o "$work/helm" helm.sh/helm/v3/cmd/helm

# cert-manager's CRDs ship in its module; keep them with the binaries.
mkdir -p "$work/cert-manager-crds"
cp "$(cd "$here/cert-manager" && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)"/deploy/crds/*.yaml "$work/cert-manager-crds/"
chmod u+w "$work/cert-manager-crds"/*.yaml

rm -rf "$out" && mv "$work" "$out"
echo "$out"
