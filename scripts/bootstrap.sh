#!/usr/bin/env bash
# Installs what the tests and the local stack need beyond npm packages:
# Debian's Mosquitto 2.0.11 (its clients, and the libraries the broker loads), openssl, jemalloc (the
# operator image's allocator, see scripts/image-rootfs.sh) and what
# test/tools/build-mosquitto.sh needs to build the broker from Debian's source with the project's patch,
# then builds (or finds in the cache) that broker, the control-plane binaries, nats-server and gitops-health (Argo CD's
# Lua and kstatus, for the GitOps health tests) from Go modules.
# With --with-node (the node-backed stack and its tests ask for it) also the node's runtime from
# Debian (containerd, runc, CNI plugins, iptables, ipset, busybox-static for the probe image, and
# buildah and mmdebstrap, with which test/tools/build-dockerfile.sh builds the Dockerfile for the
# node suite's test of it), its Go binaries (test/tools/build-node.sh) and its images
# (test/tools/build-images.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
with_node=false
[[ "${1:-}" == "--with-node" ]] && with_node=true

need=()
command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || need+=(mosquitto)
command -v mosquitto_ctrl >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
for pkg in build-essential cmake curl dpkg-dev libssl-dev libcjson-dev uthash-dev libjemalloc2; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if $with_node; then
  for pkg in containerd runc containernetworking-plugins busybox-static iptables ipset buildah mmdebstrap; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
  done
fi

if ((${#need[@]})); then
  echo "[bootstrap] installing Debian packages: ${need[*]}" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

nice -n 10 bash "$here/test/tools/build-mosquitto.sh" >/dev/null
command -v go >/dev/null 2>&1 || { echo "[bootstrap] Go >= 1.26 is required to build the control plane" >&2; exit 1; }
bash "$here/test/tools/build.sh" >/dev/null
nice -n 10 bash "$here/test/tools/build-nats.sh" >/dev/null
nice -n 10 bash "$here/test/tools/build-gitops.sh" >/dev/null
if $with_node; then
  bash "$here/test/tools/build-node.sh" >/dev/null
  bash "$here/test/tools/build-images.sh" >/dev/null
fi
