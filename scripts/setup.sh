#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what kcheckpoint needs on a Debian/Ubuntu machine (apt), builds
# CRIU >= 4.1 when the system has none that works, and builds kcheckpoint.
#
#   scripts/setup.sh [--tests] [--build-dir DIR] [--sanitize]
#
# Idempotent: a second run installs nothing and rebuilds only what changed.
# Prints the build dir on the last line.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
TESTS=0
SANITIZE=OFF
while [ $# -gt 0 ]; do
	case $1 in
	--tests) TESTS=1 ;;
	--build-dir) BUILD=$2; shift ;;
	--sanitize) SANITIZE=ON ;;
	*) echo "setup.sh: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done

if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (apt, CRIU and the tests need it)" >&2
	exit 4
fi

pkgs=(cmake make gcc pkg-config libjson-c-dev libarchive-dev libzstd-dev libcurl4-openssl-dev
      libprotobuf-c-dev protobuf-c-compiler libssl-dev zstd python3)
if [ "$TESTS" = 1 ]; then
	# containerd + runc + iptables: the containerd tests start a private containerd;
	# busybox-static is the rootfs of their test image; util-linux for setpriv
	# zsh and dash: the completion and bundle env tests; dpkg-dev: the .deb
	pkgs+=(libcmocka-dev python3-pytest containerd runc iptables busybox-static util-linux clang
	       libclang-rt-14-dev zsh dash dpkg-dev patchelf man-db)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup.sh: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CRIU=$("$ROOT/scripts/build-criu.sh" | tail -n 1)
[ -x "$CRIU" ] || { echo "setup.sh: no usable CRIU" >&2; exit 1; }

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKC_SANITIZE="$SANITIZE" -DKC_WERROR=ON \
	-DBUILD_TESTING=$([ "$TESTS" = 1 ] && echo ON || echo OFF) >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
# for scripts that follow: which CRIU the build goes with
echo "KCHECKPOINT_CRIU=$CRIU" >"$BUILD/criu.env"
echo "$BUILD"
