#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Probe (issue 10): can the driver's GPU restore read its host-memory
# backup through userfaultfd, i.e. could a fill serve the pages the
# driver asks for first and overlap with the GPU restore?  CRIU's own
# lazy restore (`criu lazy-pages` + `restore --lazy-pages`) puts every
# page of the restored process behind userfaultfd; the manual flow's
# driver calls then restore the GPU.  The same image is restored once
# lazily and once plainly; each restore checks all VRAM (gpu_workload).
#
#   bench/lazy_probe.sh BINDIR [GIB]    (BINDIR: gpu_workload, cuda_ckpt)
#
# Environment: KCHECKPOINT_CRIU (criu), WORK (default /var/tmp/kc-lazy).
set -uo pipefail
BIN=$(cd "$1" && pwd) GIB=${2:-8}
CRIU=${KCHECKPOINT_CRIU:-criu}
WORK=${WORK:-/var/tmp/kc-lazy}
rm -rf "$WORK" && mkdir -p "$WORK/img" || exit 1
ROOT="" PID=""
trap '[ -n "$ROOT" ] && pkill -9 -s "$ROOT"; [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; pkill -9 -f "lazy-pages -D $WORK"' EXIT
now() { date +%s.%N; }
el() { python3 -c "print(f'{$2 - $1:.3f}')"; }
field() { tr ' ' '\n' <"$WORK/st" | sed -n "s/^$1=//p"; }
probe() { # all VRAM checked by the workload: "counter mismatches"
	local before
	before=$(cat "$WORK/st")
	kill -USR1 "$PID"
	for _ in $(seq 1200); do [ "$(cat "$WORK/st")" != "$before" ] && break; sleep 0.05; done
	echo "$(field counter) $(field mismatches) $(grep -o 'error=[^ ]*' "$WORK/st")"
}
gone() { for _ in $(seq 6000); do [ -e "/proc/$1" ] || return 0; sleep 0.01; done; return 1; }
"$CRIU" --version | head -1
"$CRIU" check --feature uffd-noncoop 2>&1 | tail -1
setsid -f sh -c "echo \$\$ >$WORK/root.pid; $BIN/gpu_workload --gib $GIB --seed 1 --status $WORK/st & wait" \
	</dev/null >"$WORK/workload.log" 2>&1
for _ in $(seq 1200); do [ -s "$WORK/st" ] && break; sleep 0.1; done
ROOT=$(cat "$WORK/root.pid") PID=$(field pid)
echo "workload $PID ($GIB GiB VRAM): $(probe)"
t0=$(now); "$BIN/cuda_ckpt" --toggle --pid "$PID" >/dev/null || exit 1; t1=$(now)
"$CRIU" dump -t "$ROOT" -D "$WORK/img" -o dump.log || { tail -5 "$WORK/img/dump.log"; exit 1; }
t2=$(now)
echo "gpu checkpoint $(el "$t0" "$t1") s, criu dump $(el "$t1" "$t2") s, image $(du -sh "$WORK/img" | cut -f1)"
gone "$ROOT" && gone "$PID" || exit 1
for mode in lazy plain; do
	rm -f "$WORK/lazy.done"
	if [ $mode = lazy ]; then
		# the daemon serves faults and pushes the rest in the background
		( "$CRIU" lazy-pages -D "$WORK/img" -o lazy.log; echo $? >"$WORK/lazy.done" ) &
		sleep 0.5
		t3=$(now)
		"$CRIU" restore -d -D "$WORK/img" --lazy-pages -o restore-lazy.log || { tail -5 "$WORK/img/restore-lazy.log"; exit 1; }
	else
		t3=$(now)
		"$CRIU" restore -d -D "$WORK/img" -o restore.log || { tail -5 "$WORK/img/restore.log"; exit 1; }
	fi
	t4=$(now)
	timeout 120 "$BIN/cuda_ckpt" --toggle --pid "$PID" >"$WORK/gpu-$mode.log" 2>&1
	rc=$?
	t5=$(now)
	echo "$mode: criu restore $(el "$t3" "$t4") s, gpu restore+unlock $(el "$t4" "$t5") s (exit $rc: $(tail -1 "$WORK/gpu-$mode.log"))"
	[ $mode = lazy ] && { for _ in $(seq 600); do [ -e "$WORK/lazy.done" ] && break; sleep 0.1; done
		echo "lazy: daemon done after $(el "$t3" "$(now)") s, exit $(cat "$WORK/lazy.done" 2>/dev/null)"
		grep -E "Error|uffd|fault" "$WORK/img/lazy.log" | tail -3; }
	[ $rc = 0 ] && echo "$mode: after restore: $(probe)"
	pkill -9 -s "$ROOT" 2>/dev/null; kill -9 "$PID" 2>/dev/null
	gone "$PID" || exit 1
done
