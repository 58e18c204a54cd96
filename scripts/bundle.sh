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
# POSIX sh: works sourced from sh, dash, bash and zsh, from any directory.
# POSIX gives a sourced file no way to know its own path; bash and zsh have
# one each, and on Linux any shell holds the file open while it reads it,
# so /proc/$$/fd names it.
cat >"$DEST/kcheckpoint.env" <<'ENV'
# Source this file (". /path/to/kcheckpoint-VERSION/kcheckpoint.env"): puts the
# bundle's kcheckpoint and CRIU first and enables completion (bash, zsh).
KCHECKPOINT_BUNDLE=
if [ -n "${BASH_VERSION:-}" ]; then
	KCHECKPOINT_BUNDLE=$(dirname -- "$(readlink -f -- "${BASH_SOURCE}")")
elif [ -n "${ZSH_VERSION:-}" ]; then
	eval 'KCHECKPOINT_BUNDLE=${${(%):-%x}:A:h}'
else
	for kc_fd in /proc/$$/fd/*; do
		kc_f=$(readlink "$kc_fd" 2>/dev/null) || continue
		case $kc_f in */kcheckpoint.env) KCHECKPOINT_BUNDLE=${kc_f%/kcheckpoint.env} ;; esac
	done
	unset kc_fd kc_f
fi
if [ ! -x "$KCHECKPOINT_BUNDLE/bin/kcheckpoint" ]; then
	echo "kcheckpoint.env: cannot tell where the bundle is; source it by its full path" >&2
	return 1 2>/dev/null || exit 1
fi
export KCHECKPOINT_BUNDLE
PATH=$KCHECKPOINT_BUNDLE/bin:$PATH
export PATH
KCHECKPOINT_CRIU=$KCHECKPOINT_BUNDLE/bin/criu
export KCHECKPOINT_CRIU
MANPATH=$KCHECKPOINT_BUNDLE/share/man:${MANPATH:-}
export MANPATH
if [ -n "${BASH_VERSION:-}" ] && command -v complete >/dev/null 2>&1; then
	. "$KCHECKPOINT_BUNDLE/share/completions/kcheckpoint.bash"
elif [ -n "${ZSH_VERSION:-}" ]; then
	# zsh syntax, hidden from other shells' parsers
	eval 'fpath=("$KCHECKPOINT_BUNDLE/share/completions" $fpath)
	if command -v compdef >/dev/null 2>&1; then
		autoload -Uz _kcheckpoint && compdef _kcheckpoint kcheckpoint
	fi' 
fi
ENV
tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
echo "$OUT/$NAME.tar.gz"
