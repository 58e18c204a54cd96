#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The quick start: set up, start a demo workload, dump it to an archive,
# restore it, and check that its memory and counter survived.  On a machine
# with an NVIDIA GPU and nvcc the workload holds GPU memory (KC_DEMO_GIB,
# default 2); elsewhere it is a CPU process holding KC_DEMO_MB (default 512).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$("$ROOT/scripts/setup.sh" | tail -n 1)
. "$BUILD/criu.env"
export KCHECKPOINT_CRIU
KC=$BUILD/kcheckpoint
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kcheckpoint-demo.XXXXXX")
STATUS=$WORK/status
PID=

cleanup() {
	[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

field() { tr ' ' '\n' <"$STATUS" | sed -n "s/^$1=//p"; }

probe() { # SIGUSR1 makes the workload verify its memory and rewrite STATUS
	local old
	old=$(cat "$STATUS")
	kill -USR1 "$PID"
	for _ in $(seq 600); do
		[ "$(cat "$STATUS" 2>/dev/null)" != "$old" ] && return 0
		sleep 0.05
	done
	echo "demo: pid $PID did not answer" >&2
	return 1
}

if nvidia-smi -L >/dev/null 2>&1 && command -v nvcc >/dev/null; then
	MODE=gpu
	nvcc -O2 -o "$BUILD/workload/gpu_workload" "$ROOT/tests/workload/gpu_workload.cu"
	setsid -f "$BUILD/workload/gpu_workload" --gib "${KC_DEMO_GIB:-2}" --status "$STATUS" </dev/null >"$WORK/log" 2>&1
else
	MODE=cpu
	setsid -f "$BUILD/workload/cpu_workload" --mb "${KC_DEMO_MB:-512}" --status "$STATUS" </dev/null >"$WORK/log" 2>&1
fi
for _ in $(seq 1200); do [ -s "$STATUS" ] && break; sleep 0.05; done
[ -s "$STATUS" ] || { echo "demo: workload did not start: $(cat "$WORK/log")" >&2; exit 1; }
PID=$(field pid)
probe
echo "== demo ($MODE): pid $PID: $(cat "$STATUS")"

"$KC" check || true
echo "== dump"
"$KC" dump -o "$WORK/demo.tar.zst" "$PID"
echo "== inspect"
"$KC" inspect "$WORK/demo.tar.zst" | sed -n '1,8p'
echo "== restore"
"$KC" restore "$WORK/demo.tar.zst" >/dev/null
BEFORE=$(cat "$STATUS")
probe
AFTER=$(cat "$STATUS")
echo "before: $BEFORE"
echo "after:  $AFTER"
if [ "$MODE" = gpu ]; then
	[ "$(field mismatches)" = 0 ] || { echo "demo: FAILED: VRAM pattern differs" >&2; exit 1; }
else
	[ "$(field ok)" = 1 ] || { echo "demo: FAILED: memory pattern differs" >&2; exit 1; }
fi
echo "demo: OK: pid $PID restored, its memory verified and its counter running"
