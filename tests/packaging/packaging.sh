#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a packager, an admin and a CI script author meet (issue 12), on this
# machine, each step failing the test:
#   1. a Release build with gcc and one with clang, both with -Werror;
#   2. cmake --install into a prefix: binary, plugin, man page, completions,
#      license where they belong;
#   3. the Debian package (cpack -G DEB): installed with dpkg, then
#      `kcheckpoint check`, the man page and bash completion found, removed;
#   4. the bundle (scripts/bundle.sh): its env file sourced by sh, dash, bash
#      and zsh from another directory puts kcheckpoint and CRIU first and
#      enables completion.
#   tests/packaging/packaging.sh SOURCE_DIR       (CRIU: $KCHECKPOINT_CRIU, else .deps/criu)
set -euo pipefail
SRC=$1
CRIU=${KCHECKPOINT_CRIU:-$SRC/.deps/criu/bin/criu}
T=$(mktemp -d /var/tmp/kc-pkg-XXXXXX)
trap 'dpkg -r kcheckpoint >/dev/null 2>&1 || true; rm -rf "$T"' EXIT
step() { echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "Release build, gcc, -Werror"
CC=gcc cmake -S "$SRC" -B "$T/gcc" -DCMAKE_BUILD_TYPE=Release -DKC_WERROR=ON >/dev/null
cmake --build "$T/gcc" -j"$(nproc)" >"$T/gcc.log" 2>&1 || { tail -30 "$T/gcc.log"; fail "gcc Release build"; }
step "Release build, clang, -Werror"
CC=clang cmake -S "$SRC" -B "$T/clang" -DCMAKE_BUILD_TYPE=Release -DKC_WERROR=ON >/dev/null
cmake --build "$T/clang" -j"$(nproc)" >"$T/clang.log" 2>&1 || { tail -30 "$T/clang.log"; fail "clang Release build"; }

step "cmake --install"
cmake --install "$T/gcc" --prefix "$T/inst" >/dev/null
for f in bin/kcheckpoint lib/kcheckpoint/criu/kcheckpoint_gpu_fork.so share/man/man1/kcheckpoint.1 \
	share/bash-completion/completions/kcheckpoint share/zsh/vendor-completions/_kcheckpoint \
	share/doc/kcheckpoint/LICENSE; do
	[ -e "$T/inst/$f" ] || fail "cmake --install did not install $f"
done
"$T/inst/bin/kcheckpoint" --version | grep -q '^kcheckpoint ' || fail "installed binary does not run"
# the installed binary finds its plugin beside it, not in the build tree
KCHECKPOINT_CRIU=$CRIU "$T/inst/bin/kcheckpoint" check | grep -q "ok    criu plugin  '$T/inst/lib/kcheckpoint/criu/" ||
	fail "installed kcheckpoint does not find its CRIU plugin"

step "Debian package"
(cd "$T/gcc" && cpack -G DEB >/dev/null) || fail "cpack -G DEB"
DEB=$(ls "$T"/gcc/kcheckpoint_*.deb)
dpkg-deb -I "$DEB" | grep -E "Package|Version|Depends|Recommends"
dpkg -i "$DEB" >/dev/null || fail "dpkg -i $DEB"
[ "$(command -v kcheckpoint)" = /usr/bin/kcheckpoint ] || fail "kcheckpoint is not /usr/bin/kcheckpoint"
KCHECKPOINT_CRIU=$CRIU kcheckpoint check >"$T/check.log" || { cat "$T/check.log"; fail "kcheckpoint check"; }
grep -q "ok    criu plugin  '/usr/lib/kcheckpoint/criu/" "$T/check.log" || fail "packaged plugin not found"
man -w kcheckpoint | grep -q '^/usr/share/man/man1/kcheckpoint.1' || fail "man page not found by man"
bash -c '. /usr/share/bash-completion/completions/kcheckpoint && complete -p kcheckpoint' | grep -q _kcheckpoint ||
	fail "bash completion not found"
dpkg -r kcheckpoint >/dev/null || fail "dpkg -r"
[ ! -e /usr/bin/kcheckpoint ] || fail "dpkg -r left /usr/bin/kcheckpoint"

step "bundle, env file in sh, dash, bash, zsh"
OUT=$("$SRC/scripts/bundle.sh" "$T/bundle" | tail -n 1)
mkdir -p "$T/unpacked" && tar -xzf "$OUT" -C "$T/unpacked"
B=$(ls -d "$T"/unpacked/kcheckpoint-*)
[ ! -e "$B/bin/cpu_workload" ] || fail "a test program is in the bundle"
for sh in sh dash bash zsh; do
	got=$(cd / && $sh -c ". $B/kcheckpoint.env && command -v kcheckpoint && echo \$KCHECKPOINT_CRIU && kcheckpoint --version")
	[ "$(echo "$got" | sed -n 1p)" = "$B/bin/kcheckpoint" ] || fail "$sh: PATH: $got"
	[ "$(echo "$got" | sed -n 2p)" = "$B/bin/criu" ] || fail "$sh: KCHECKPOINT_CRIU: $got"
	echo "$got" | sed -n 3p | grep -q '^kcheckpoint ' || fail "$sh: kcheckpoint does not run"
done
(cd / && bash -c ". $B/kcheckpoint.env && complete -p kcheckpoint") | grep -q _kcheckpoint || fail "bash: no completion"
# through a symlink to the file, and with CDPATH set (cd would print)
mkdir -p "$T/links" && ln -s "$B/kcheckpoint.env" "$T/links/kcheckpoint.env"
for sh in dash bash zsh; do
	got=$(cd "$T" && CDPATH=.:/usr $sh -c ". links/kcheckpoint.env && command -v kcheckpoint")
	[ "$got" = "$B/bin/kcheckpoint" ] || fail "$sh, through a symlink with CDPATH: $got"
done
(cd / && zsh -fc "autoload -Uz compinit && compinit -u -D && . $B/kcheckpoint.env && print -r -- \${_comps[kcheckpoint]}") |
	grep -q _kcheckpoint || fail "zsh: no completion"
echo "packaging: all steps passed"
