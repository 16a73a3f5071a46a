#!/usr/bin/env bash
# Assembles an image's root filesystem in OUT from this machine's files, for
# test/tools/build-images.sh and the Dockerfile alike (so both yield the same image):
#   operator OUT   the built app (dist/, bin/, production node_modules) in /app, the Node.js
#                  binary of the npm `node` package and jemalloc, with the shared libraries they need
#   mosquitto OUT  the broker and dynamic-security plugin test/tools/build-mosquitto.sh builds (Debian's
#                  2.0.11 source with the project's patch) and the libraries they load
# Both run as a non-root user and need nothing writable but their mounted volumes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="$1" out="$2"

# copy_with_libs FILE...: copies each file and every shared library it loads to the same path under $out.
copy_with_libs() {
  local f
  for f in "$@"; do
    mkdir -p "$out$(dirname "$f")" && cp -L "$f" "$out$f"
    ldd "$f" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
      [[ -e "$out$lib" ]] || { mkdir -p "$out$(dirname "$lib")" && cp -L "$lib" "$out$lib"; }
    done
  done
}

# user NAME UID: the only account in the image.
user() {
  mkdir -p "$out/etc" "$out/tmp"
  echo "$1:x:$2:$2::/nonexistent:/sbin/nologin" > "$out/etc/passwd"
  echo "$1:x:$2:" > "$out/etc/group"
}

case "$kind" in
  operator)
    node_bin="$(readlink -f "$here/node_modules/node/bin/node")"
    copy_with_libs "$node_bin"
    # The binary sits in node_modules here; in the image it is /usr/local/bin/node.
    mkdir -p "$out/usr/local/bin" && mv "$out$node_bin" "$out/usr/local/bin/node"
    rm -rf "$out/$(echo "$node_bin" | cut -d/ -f2)"
    # jemalloc, which the image preloads (LD_PRELOAD in its config): glibc's malloc kept the memory of
    # 10,000 parsed certificates resident after they were freed (52 MB of a 237 MB operator), jemalloc
    # gives freed pages back. At a fixed path, whatever the architecture's library directory.
    jemalloc="$(ldconfig -p | awk '/libjemalloc\.so\.2 / { print $NF; exit }')"
    [[ -n "$jemalloc" ]] || { echo "image-rootfs.sh: libjemalloc.so.2 not found (Debian package libjemalloc2)" >&2; exit 1; }
    copy_with_libs "$jemalloc"
    mkdir -p "$out/usr/local/lib" && mv "$out$jemalloc" "$out/usr/local/lib/libjemalloc.so.2"
    mkdir -p "$out/app"
    cp -r "$here/dist" "$here/bin" "$here/package.json" "$here/package-lock.json" "$out/app/"
    (cd "$out/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    rm -f "$out/app/package-lock.json"
    # Type declarations, source maps and docs of dependencies are never loaded at run time.
    find "$out/app/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.md' \) -delete
    # npm 9 (Debian's, which the Dockerfile builds with) leaves omitted dev packages' scope directories.
    find "$out/app/node_modules" -type d -empty -delete
    user nonroot 65532
    ;;
  mosquitto)
    build="$(bash "$here/test/tools/build-mosquitto.sh")"
    copy_with_libs "$build/mosquitto" "$build/mosquitto_dynamic_security.so"
    # The paths Debian's package uses: the chart starts /usr/sbin/mosquitto and loads the plugin from
    # /usr/lib/mosquitto_dynamic_security.so.
    mkdir -p "$out/usr/sbin" "$out/usr/lib" && mv "$out$build/mosquitto" "$out/usr/sbin/mosquitto"
    mv "$out$build/mosquitto_dynamic_security.so" "$out/usr/lib/mosquitto_dynamic_security.so"
    rm -rf "${out:?}$build" && find "$out" -type d -empty -delete
    user mosquitto 1883
    ;;
  *)
    echo "usage: image-rootfs.sh operator|mosquitto OUT" >&2
    exit 2
    ;;
esac
