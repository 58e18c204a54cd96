#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Makes a relocatable bundle for GPU nodes that have none of kcheckpoint's
# dependencies (an Ubuntu 24.04 node, say):
#
#   kcheckpoint-<version>-x86_64/
#     bin/kcheckpoint   bin/criu   (rpath $ORIGIN/../lib)
#     lib/              every non-glibc shared library they need
#     lib/kcheckpoint/criu/kcheckpoint_gpu_fork.so   the CRIU plugin
#     share/man/man1/kcheckpoint.1, share/completions/, kcheckpoint.env
#
#   scripts/bundle.sh [OUT_DIR]        (default: build/bundle)
#
# glibc itself is not carried: the node's must be at least as new as the
# build machine's (Debian 12: 2.36; Ubuntu 24.04 has 2.39).  Prints the
# tarball's path last.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/build/bundle}
BUILD=$("$ROOT/scripts/setup.sh" | tail -n 1)
. "$BUILD/criu.env"
command -v patchelf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >/dev/null
VERSION=$("$BUILD/kcheckpoint" --version | awk '{print $2}')
NAME=kcheckpoint-$VERSION-$(uname -m)
DEST=$OUT/$NAME
rm -rf "$DEST"
mkdir -p "$DEST/bin" "$DEST/lib" "$DEST/share/man/man1" "$DEST/share/completions"
cp "$BUILD/kcheckpoint" "$KCHECKPOINT_CRIU" "$DEST/bin/"
[ -x "$BUILD/workload/cpu_workload" ] && cp "$BUILD/workload/cpu_workload" "$DEST/bin/"
[ -f "$BUILD/criu-plugins/kcheckpoint_gpu_fork.so" ] || { echo "bundle.sh: no CRIU plugin was built" >&2; exit 1; }
mkdir -p "$DEST/lib/kcheckpoint/criu"
cp "$BUILD/criu-plugins/kcheckpoint_gpu_fork.so" "$DEST/lib/kcheckpoint/criu/"
cp "$ROOT/man/kcheckpoint.1" "$DEST/share/man/man1/"
cp "$ROOT/completions/"* "$DEST/share/completions/"

# glibc's own libraries come from the node; everything else travels
is_glibc() {
	case $1 in
	libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux* | libresolv.so.* | \
		libutil.so.* | libanl.so.* | libnsl.so.* | linux-vdso.so.*) return 0 ;;
	esac
	return 1
}
for bin in "$DEST"/bin/*; do
	ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | while read -r soname path; do
		is_glibc "$soname" || cp -L "$path" "$DEST/lib/$soname"
	done
	patchelf --set-rpath '$ORIGIN/../lib' "$bin"
done
for lib in "$DEST"/lib/*; do
	[ -f "$lib" ] && patchelf --set-rpath '$ORIGIN' "$lib"
done
cat >"$DEST/kcheckpoint.env" <<ENV
# source this: puts the bundle's kcheckpoint and CRIU first
KCHECKPOINT_BUNDLE=\$(cd "\$(dirname "\${BASH_SOURCE[0]}")" && pwd)
export PATH=\$KCHECKPOINT_BUNDLE/bin:\$PATH
export KCHECKPOINT_CRIU=\$KCHECKPOINT_BUNDLE/bin/criu
export MANPATH=\$KCHECKPOINT_BUNDLE/share/man:\${MANPATH:-}
ENV
tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
echo "$OUT/$NAME.tar.gz"
