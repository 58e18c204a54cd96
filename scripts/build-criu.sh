#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Provides a CRIU >= 4.1 that works on this kernel, building one from
# Debian's source if neither PREFIX nor the system has it.
#
#   scripts/build-criu.sh [PREFIX]      (default: <repo>/.deps/criu)
#
# Idempotent.  The last line printed on success is the path of the criu
# binary to use (pass it to kcheckpoint --criu or $KCHECKPOINT_CRIU).
# A build also installs CRIU's plugin header (PREFIX/include/criu-plugin.h),
# which kcheckpoint's CRIU plugin is compiled against, and carries the
# fixes in patches/criu/*.patch, if any (none are needed for 4.2.1).
#
# Why not apt-get install criu: bookworm ships 3.17, which fails on recent
# kernels, and trixie's binary package wants trixie's libc.  Its source
# builds cleanly against bookworm's libraries.
set -eu

CRIU_VERSION=4.2.1
CRIU_TARBALL=criu_${CRIU_VERSION}.orig.tar.xz
CRIU_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
# 4.1.x cannot dump any inet socket on kernels >= 6.16 (SO_PASSCRED is
# refused there; checkpoint-restore/criu #2705, fixed in 4.2).
MIN_VERSION=4.2

# What `make criu` needs (criu/Makefile.packages links -lprotobuf-c -lnl-3
# -lnet -luuid, libcap for the headers, descriptor.proto comes from
# libprotobuf-dev; 4.2 runs protoc with protoc-gen-c), patch for
# patches/criu/.  python3-protobuf (crit only), libaio-dev (CRIU's own
# tests) and libdrm-dev (amdgpu plugin) are not needed.
BUILD_DEPS="gcc make pkg-config libc6-dev libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
	libnl-3-dev libnet1-dev libcap-dev uuid-dev xz-utils ca-certificates patch"
# Not required, but CRIU silently loses features without them:
# setproctitle (libbsd), TLS page server (gnutls), nftables network locking,
# and `ip`, which CRIU runs to dump network namespaces.
FEATURE_DEPS="libbsd-dev libgnutls28-dev libnftables-dev iproute2"

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$repo/.deps/criu}

log() {
	echo "build-criu: $*" >&2
}

die() {
	log "$*"
	exit 1
}

# Prints "4.1.1" for a criu binary, nothing if it does not run.
criu_version() {
	"$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1
}

version_ge() {
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

# Usable: recent enough and `criu check` passes on this kernel.
usable() {
	[ -x "$1" ] || return 1
	v=$(criu_version "$1")
	if [ -z "$v" ]; then
		log "'$1' does not report a version"
		return 1
	fi
	if ! version_ge "$v" "$MIN_VERSION"; then
		log "'$1' is CRIU $v, need >= $MIN_VERSION"
		return 1
	fi
	if ! out=$("$1" check 2>&1); then
		log "'$1' (CRIU $v) fails 'criu check': $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
		return 1
	fi
	return 0
}

# What a build of ours is: the version and the patches carried with it.
stamp() {
	echo "$CRIU_VERSION"
	for p in "$repo"/patches/criu/*.patch; do
		if [ -f "$p" ]; then
			sha256sum "$p" | cut -d' ' -f1
		fi
	done
}

if [ -f "$prefix/include/criu-plugin.h" ] && [ "$(cat "$prefix/build-stamp" 2>/dev/null)" = "$(stamp)" ] &&
	usable "$prefix/bin/criu"; then
	echo "$prefix/bin/criu"
	exit 0
fi

# A system CRIU is taken only when asked (KC_SYSTEM_CRIU=1): ours carries
# fixes and the header kcheckpoint's plugin is built against.
if [ "${KC_SYSTEM_CRIU:-0}" = 1 ]; then
	tried=" "
	for c in $(command -v criu 2>/dev/null || true) /usr/sbin/criu /usr/local/sbin/criu; do
		case $tried in *" $c "*) continue ;; esac
		tried="$tried$c "
		if [ -x "$c" ] && usable "$c"; then
			echo "$c"
			exit 0
		fi
	done
fi

missing=""
for p in $BUILD_DEPS $FEATURE_DEPS; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || die "missing packages:$missing (run as root or install them)"
	log "installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	if ! apt-get install -y --no-install-recommends $missing >&2; then
		apt-get update >&2
		# shellcheck disable=SC2086
		apt-get install -y --no-install-recommends $missing >&2
	fi
fi

# The mirror this machine already trusts, in deb822 or one-line form.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$f" |
		grep -v -- '-security' | grep '/debian/\{0,1\}$' | head -n 1 || true)
	[ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
	mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
url=$mirror/pool/main/c/criu/$CRIU_TARBALL

srcdir=$prefix/src
tarball=$srcdir/$CRIU_TARBALL
mkdir -p "$srcdir"

sha_ok() {
	[ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$CRIU_SHA256" ]
}

if ! sha_ok "$tarball"; then
	log "downloading $url"
	rm -f "$tarball.part"
	if command -v curl >/dev/null; then
		curl -fsSL --retry 3 -o "$tarball.part" "$url"
	elif command -v wget >/dev/null; then
		wget -q -O "$tarball.part" "$url"
	else
		python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
			"$url" "$tarball.part"
	fi
	sha_ok "$tarball.part" || die "'$url' does not match sha256 $CRIU_SHA256"
	mv "$tarball.part" "$tarball"
fi

build=$(mktemp -d "${TMPDIR:-/tmp}/build-criu.XXXXXX")
trap 'rm -rf "$build"' EXIT INT TERM
tar -xJf "$tarball" -C "$build"
topdir=$(find "$build" -mindepth 1 -maxdepth 1 -type d | head -n 1)
[ -n "$topdir" ] || die "'$tarball' holds no source tree"

for p in "$repo"/patches/criu/*.patch; do
	[ -f "$p" ] || continue
	log "applying $(basename "$p")"
	patch -d "$topdir" -p1 --quiet --forward <"$p" >&2 || die "'$p' does not apply to CRIU $CRIU_VERSION"
done

log "building CRIU $CRIU_VERSION in $topdir"
if ! make -C "$topdir" -j"$(nproc)" criu >"$build/make.log" 2>&1; then
	tail -n 30 "$build/make.log" >&2
	die "building CRIU failed"
fi

install -d "$prefix/bin"
install -m 0755 "$topdir/criu/criu" "$prefix/bin/criu.new"
mv "$prefix/bin/criu.new" "$prefix/bin/criu"
install -d "$prefix/include"
install -m 0644 "$topdir/criu/include/criu-plugin.h" "$prefix/include/criu-plugin.h"
stamp >"$prefix/build-stamp"

usable "$prefix/bin/criu" || die "the CRIU just built in '$prefix' is not usable here"
echo "$prefix/bin/criu"
