#!/usr/bin/env bash
# Builds the Mosquitto broker and its dynamic-security plugin from Debian bookworm's source package
# (the version bookworm installs, with Debian's own patches and security fixes) plus the project's
# patch in mosquitto/, into a cache outside the repo keyed by the version, this script and the
# patches, next to build.sh's cache. Prints the directory holding `mosquitto` and
# `mosquitto_dynamic_security.so`. A warm cache returns at once.
# Why: Mosquitto 2.0.x puts an offline persistent session on its session-expiry list twice when it is
# disconnected again (a reload, which the operator triggers after each CRL rewrite), and uses freed
# memory once that session is removed; the fix is only in 2.1.0 (see mosquitto/session-expiry-kick.patch).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

version="2.0.11-1.2+deb12u2"
upstream_version="${version%%-*}"
# SHA-256 of the .dsc, checked once against bookworm's InRelease (signed by the Debian stable
# release key) -> main/source/Sources.xz; the .dsc in turn pins the tarballs.
dsc_sha256="77afb2d38230b37b085ff7b363a71669951044460e28731e958c0b94019e9263"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
patches=("$here/mosquitto/session-expiry-kick.patch")

key="$( { echo "$version"; gcc --version | head -n1; cat "$here/build-mosquitto.sh" "${patches[@]}"; } | sha256sum | cut -c1-16)"
cache_root="${IOT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/iot-tenant-operator}"
out="$cache_root/mosquitto-$version-$key"

if [[ -x "$out/mosquitto" && -f "$out/mosquitto_dynamic_security.so" ]]; then echo "$out"; exit 0; fi

work="$out.partial"
rm -rf "$work" && mkdir -p "$work/dl" "$work/bin"
echo "[build-mosquitto] building mosquitto $version + project patches into $out" >&2
t0=$SECONDS

dsc="mosquitto_$version.dsc"
files=("$dsc" "mosquitto_$upstream_version.orig.tar.gz" "mosquitto_$version.debian.tar.xz")
for f in "${files[@]}"; do
  curl -fsSL --retry 3 -o "$work/dl/$f" "$mirror/pool/main/m/mosquitto/$f"
done
echo "$dsc_sha256  $work/dl/$dsc" | sha256sum -c --quiet -
# The .dsc's Checksums-Sha256 lines: " <sha256> <size> <file>".
sed -n '/^Checksums-Sha256:/,/^[^ ]/{/^ /p}' "$work/dl/$dsc" | awk -v d="$work/dl" '{print $1 "  " d "/" $3}' \
  | sha256sum -c --quiet -

# The signature is checked through the pinned hash, not against a keyring that may be absent.
dpkg-source --no-check -x "$work/dl/$dsc" "$work/src" >/dev/null
for p in "${patches[@]}"; do patch -d "$work/src" -p1 --quiet --forward <"$p"; done

# Debian's hardening flags and its CMake options, less what the project never uses (websockets,
# DLT, systemd notify, TCP wrappers, docs, clients).
eval "$(dpkg-buildflags --export=sh)"
cmake -S "$work/src" -B "$work/build" -Wno-dev \
  -DCMAKE_BUILD_TYPE=None -DCMAKE_C_FLAGS="$CFLAGS $CPPFLAGS" -DCMAKE_SHARED_LINKER_FLAGS="$LDFLAGS" \
  -DCMAKE_MODULE_LINKER_FLAGS="$LDFLAGS" -DCMAKE_EXE_LINKER_FLAGS="$LDFLAGS" \
  -DWITH_BUNDLED_DEPS=OFF -DWITH_ADNS=ON -DUSE_LIBWRAP=OFF -DWITH_WEBSOCKETS=OFF -DWITH_DLT=OFF \
  -DWITH_SYSTEMD=OFF -DDOCUMENTATION=OFF -DWITH_CLIENTS=OFF >"$work/build.log" 2>&1 \
  && cmake --build "$work/build" --target mosquitto mosquitto_dynamic_security -j "$(nproc)" >>"$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log" >&2; exit 1; }
install -m 755 "$work/build/src/mosquitto" "$work/bin/mosquitto"
install -m 644 "$work/build/plugins/dynamic-security/mosquitto_dynamic_security.so" "$work/bin/"
echo "[build-mosquitto] built in $((SECONDS - t0))s" >&2

rm -rf "$out" && mv "$work/bin" "$out" && rm -rf "$work"
echo "$out"
