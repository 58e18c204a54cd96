#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Two kcheckpoint builds restoring one images dir of a (fake) CUDA process,
# in turns, in one run: an A/B of a restore change where cores are few.
# The fake driver (tests/fake) stands in for the GPU; its restore takes
# RESTORE_MS, as the H200's took 3.2-4.4 s for 24 GiB.  Each restore is
# checked by the workload (its memory checksum) and then killed.  Run 30's
# A/B of the checksums beside the GPU restore (docs/PERFORMANCE.md) used it.
#
#   bench/restore_ab_bench.sh KC_A KC_B [MB] [ROUNDS]   (4096 MB, 3 rounds)
#
# Environment: RESTORE_MS (default 2000), FILL_THREADS (default: all CPUs),
# KCHECKPOINT_CRIU, WORKLOAD, FAKE_CUDA (libcuda.so.1 of build/fake),
# WORK (default /var/tmp/kc-restore-ab).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
A=$1 B=$2 MB=${3:-4096} ROUNDS=${4:-3}
WORKLOAD=${WORKLOAD:-$ROOT/build/workload/cpu_workload}
WORK=${WORK:-/var/tmp/kc-restore-ab}
THREADS=${FILL_THREADS:-$(nproc)}
export KCHECKPOINT_LIBCUDA=${FAKE_CUDA:-$ROOT/build/fake/libcuda.so.1}
export KC_FAKE_CUDA_DIR=$WORK/cuda KCHECKPOINT_RUN_DIR=$WORK/run
rm -rf "$WORK" && mkdir -p "$KC_FAKE_CUDA_DIR" || exit 1
gone() { for _ in $(seq 500); do [ -e "/proc/$1" ] || return 0; sleep 0.02; done; return 1; }
sum() { # PID: the workload's checksum of its memory, fresh (a process
	# restored twice from one image answers the same line twice)
	rm -f "$WORK/status"
	kill -USR1 "$1"
	for _ in $(seq 500); do
		[ -s "$WORK/status" ] && { tr ' ' '\n' <"$WORK/status" | grep '^checksum='; return 0; }
		sleep 0.02
	done
	echo "no answer from $1"
}
setsid "$WORKLOAD" --mb "$MB" --status "$WORK/status" --cuda-dir "$KC_FAKE_CUDA_DIR" --helper-thread 1 \
	</dev/null >"$WORK/workload.log" 2>&1 &
PID=$!
for _ in $(seq 3000); do [ -s "$WORK/status" ] && break; sleep 0.05; done
WANT=$(sum "$PID")
"$B" dump -q --fill-threads "$THREADS" -D "$WORK/img" "$PID" || exit 1
wait "$PID" 2>/dev/null
gone "$PID" || exit 1
echo "== $MB MB, fake GPU restore ${RESTORE_MS:-2000} ms, $THREADS fill threads, $(nproc) CPUs"
printf '%-6s %5s %9s %9s %9s %9s %s\n' build round wall_s fill_s gpu_s check_s memory
for r in $(seq "$ROUNDS"); do
	for k in A B; do
		kc=$A; [ $k = B ] && kc=$B
		t0=$(date +%s.%N)
		KC_FAKE_CUDA_DELAY_MS=restore:${RESTORE_MS:-2000} "$kc" restore -q --json --fill-threads "$THREADS" \
			"$WORK/img" >"$WORK/r.json" || { echo "restore with $k failed"; exit 1; }
		t1=$(date +%s.%N)
		got=$(sum "$PID")
		python3 - "$WORK/r.json" "$k" "$r" "$t0" "$t1" "$([ "$got" = "$WANT" ] && echo same || echo DIFFERENT)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
st = {s["stage"]: s["seconds"] for s in d["stages"]}
print(f"{sys.argv[2]:6} {sys.argv[3]:>5} {float(sys.argv[5]) - float(sys.argv[4]):9.3f} {st.get('memory-fill', 0):9.3f} "
      f"{st.get('gpu-restore', 0):9.3f} {st.get('memory-check', 0):9.3f} {sys.argv[6]}")
PY
		kill -KILL "$PID"
		gone "$PID" || exit 1
		sleep 0.5 # until init reaped it: the next restore needs the pid
	done
done
rm -rf "$WORK"
