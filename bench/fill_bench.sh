#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Restore of a large CPU process from warm images: kcheckpoint (memory
# kept out of CRIU's images and filled with --fill-threads) against plain
# `criu restore` of CRIU's own images of the same process, same CRIU, in
# one run.  Both images come from the same process, dumped twice with
# --leave-running (once --fill-threads 0: CRIU's images, once as usual);
# each restore is checked by the workload (its memory checksum).
#
#   bench/fill_bench.sh [MB] [ROUNDS]      (default 4096 MB, 3 rounds)
#
# Environment: KC (default build/kcheckpoint), KCHECKPOINT_CRIU (criu),
# WORKLOAD (cpu_workload), WORK (default /var/tmp/kc-fill-bench), KC_RESTORE_OPTS
# (more options for kcheckpoint restore, word-split: --no-fill-huge, say).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MB=${1:-4096} ROUNDS=${2:-3}
KC=${KC:-$ROOT/build/kcheckpoint}
CRIU=${KCHECKPOINT_CRIU:-criu}
WORKLOAD=${WORKLOAD:-$ROOT/build/workload/cpu_workload}
WORK=${WORK:-/var/tmp/kc-fill-bench}
export KCHECKPOINT_CRIU=$CRIU
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
now() { date +%s.%N; }
gone() { for _ in $(seq 500); do [ -e "/proc/$1" ] || return 0; sleep 0.02; done; return 1; }
probe() { # PID: asks for a fresh status line, prints it
	local before
	before=$(cat "$WORK/status" 2>/dev/null)
	kill -USR1 "$1"
	for _ in $(seq 500); do
		[ "$(cat "$WORK/status" 2>/dev/null)" != "$before" ] && { cat "$WORK/status"; return 0; }
		sleep 0.02
	done
	echo "no answer from $1"
	return 1
}

setsid "$WORKLOAD" --mb "$MB" --status "$WORK/status" </dev/null >"$WORK/workload.log" 2>&1 &
PID=$!
# a dump that fails must not leave the workload behind for the next run
trap 'kill -9 "$PID" 2>/dev/null' EXIT
for _ in $(seq 3000); do [ -s "$WORK/status" ] && break; sleep 0.05; done
"$KC" dump -q --leave-running --fill-threads 0 -D "$WORK/criu-images" "$PID" || exit 1
"$KC" dump -q --leave-running -D "$WORK/kc-images" "$PID" || exit 1
echo "workload: $MB MB, pid $PID; images: CRIU's $(du -sh "$WORK/criu-images" | cut -f1), kcheckpoint's $(du -sh "$WORK/kc-images" | cut -f1) (bulk $(du -ch "$WORK"/kc-images/kcheckpoint-bulk-*.img | tail -n 1 | cut -f1))"
kill -9 "$PID"
wait "$PID" 2>/dev/null
gone "$PID" || exit 1

printf '%-6s %-12s %8s  %s\n' round flow seconds check
for r in $(seq "$ROUNDS"); do
	for flow in criu kcheckpoint; do
		t0=$(now)
		if [ $flow = criu ]; then
			rm -f "$WORK/criu-images/restore.pid"
			"$CRIU" restore -d -D "$WORK/criu-images" -o restore.log --pidfile "$WORK/criu.pid" >/dev/null 2>&1
		else
			"$KC" restore -q ${KC_RESTORE_OPTS:-} "$WORK/kc-images" >/dev/null
		fi
		rc=$?
		t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
		check=$([ $rc = 0 ] && probe "$PID" || echo "restore failed (exit $rc)")
		printf '%-6s %-12s %8s  %s\n' "$r" "$flow" "$t" "$check"
		rm -f "$WORK/criu.pid"
		kill -9 "$PID" 2>/dev/null
		gone "$PID" || exit 1
	done
done
[ -n "${KEEP:-}" ] || rm -rf "$WORK"
