#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What the real driver answers about a stopped CUDA process: the driver
# calls kcheckpoint's state and recover make, on a process stopped by
# SIGSTOP, running or checkpointed (each call bounded by a timeout; on a
# hang the kernel stacks of the caller's threads are printed).
#
#   bench/stopped_probe.sh BINDIR [GIB]   (BINDIR: gpu_workload, cuda_ckpt; KC: kcheckpoint)
#   SECOND_ONLY=1: steps 13-20 only (the single driver calls)
set -uo pipefail
BIN=$(cd "$1" && pwd) GIB=${2:-1}
KC=${KC:-kcheckpoint}
WORK=${WORK:-/var/tmp/kc-stopped}
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
ROOT=""
trap '[ -n "$ROOT" ] && kill -9 "$ROOT" 2>/dev/null' EXIT
# CMD...: runs it for $LIMIT s at most (default 10); prints rc, output and,
# on a hang, stacks
bounded() {
	local t0 t1 p rc
	t0=$(date +%s.%N)
	"$@" >"$WORK/out" 2>&1 &
	p=$!
	for _ in $(seq $((${LIMIT:-10} * 10))); do kill -0 $p 2>/dev/null || break; sleep 0.1; done
	if kill -0 $p 2>/dev/null; then
		echo "  HANG after ${LIMIT:-10} s: $*"
		echo "  its output: $(tr '\n' ' ' <"$WORK/out" | tail -c 600)"
		for c in $(pgrep -P $p); do echo "  child $c $(cat /proc/$c/comm) wchan=$(cat /proc/$c/wchan)"; done
		for t in /proc/$p/task/*; do echo "  task ${t##*/} $(cat "$t/comm") wchan=$(cat "$t/wchan" 2>/dev/null)"; sed 's/^/    /' "$t/stack" 2>/dev/null | head -12; done
		echo "  target: $(grep -E '^(State|TracerPid|SigPnd|ShdPnd|SigBlk)' /proc/$ROOT/status | tr '\n' ' ')"
		for t in /proc/$ROOT/task/*; do echo "    target task ${t##*/} $(cat "$t/comm") $(awk '{print $3}' "$t/stat") wchan=$(cat "$t/wchan" 2>/dev/null)"; done
		kill -9 $p
		wait $p 2>/dev/null
		return 124
	fi
	wait $p
	rc=$?
	t1=$(date +%s.%N)
	echo "  rc=$rc in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s: $(tr '\n' ' ' <"$WORK/out" | cut -c1-300)"
	return $rc
}
setsid -f sh -c "echo \$\$ >$WORK/root.pid; exec $BIN/gpu_workload --gib $GIB --seed 3 --status $WORK/st" </dev/null >"$WORK/workload.log" 2>&1
for _ in $(seq 1200); do [ -s "$WORK/st" ] && break; sleep 0.1; done
ROOT=$(cat "$WORK/root.pid")
echo "workload $ROOT: $(cat "$WORK/st")"
if [ -n "${DUMP_ONLY:-}" ]; then
	kill -STOP "$ROOT"; sleep 0.3
	echo "21. SIGSTOPped: kcheckpoint dump --leave-running"
	LIMIT=40 bounded "$KC" dump -v --leave-running --progress json --fill-threads 4 -D "$WORK/img" "$ROOT"
	sleep 1
	echo "  after: $(grep -E '^(State|TracerPid)' /proc/$ROOT/status | tr '\n' ' '), kcheckpoint state: $(timeout 20 "$KC" state --json "$ROOT" 2>&1 | tr -d "\n ")"
	for t in /proc/$ROOT/task/*; do echo "    target task ${t##*/} $(cat "$t/comm") $(awk '{print $3}' "$t/stat") $(grep -E '^(TracerPid|SigBlk)' "$t/status" | tr '\n' ' ')"; done
	echo "22. the same, a SIGSTOP sent 0.3 s into the dump (its GPU stage)"
	( sleep 0.3; kill -STOP "$ROOT" ) &
	LIMIT=40 bounded "$KC" dump -v --leave-running --progress json --fill-threads 4 -D "$WORK/img2" "$ROOT"
	sleep 1
	echo "  after: $(grep -E '^(State|TracerPid)' /proc/$ROOT/status | tr '\n' ' '), kcheckpoint state: $(timeout 20 "$KC" state --json "$ROOT" 2>&1 | tr -d "\n ")"
	kill -CONT "$ROOT"; sleep 2
	echo "  continued: cuda state $(timeout 10 "$BIN/cuda_ckpt" --get-state --pid "$ROOT" 2>&1 | tr '\n' ' ')"
	before=$(cat "$WORK/st"); kill -USR1 "$ROOT"
	for _ in $(seq 600); do [ "$(cat "$WORK/st")" != "$before" ] && break; sleep 0.05; done
	echo "  workload: $(cat "$WORK/st")"
	exit 0
fi
if [ -z "${SECOND_ONLY:-}" ]; then
echo "1. running: cuda_ckpt --get-state"; bounded "$BIN/cuda_ckpt" --get-state --pid "$ROOT"
echo "2. running: kcheckpoint state"; bounded "$KC" state --json "$ROOT"
kill -STOP "$ROOT"; sleep 0.3
echo "3. SIGSTOPped, running GPU: cuda_ckpt --get-state"; bounded "$BIN/cuda_ckpt" --get-state --pid "$ROOT"
echo "4. SIGSTOPped, running GPU: kcheckpoint state"; bounded "$KC" state --json "$ROOT"
kill -CONT "$ROOT"; sleep 0.3
echo "5. running: cuda_ckpt --toggle (lock + checkpoint)"; bounded "$BIN/cuda_ckpt" --toggle --pid "$ROOT"
echo "6. running, checkpointed: cuda_ckpt --get-state"; bounded "$BIN/cuda_ckpt" --get-state --pid "$ROOT"
kill -STOP "$ROOT"; sleep 0.3
echo "7. SIGSTOPped, checkpointed: cuda_ckpt --get-state"; bounded "$BIN/cuda_ckpt" --get-state --pid "$ROOT"
echo "8. SIGSTOPped, checkpointed: kcheckpoint state"; bounded "$KC" state --json "$ROOT"
echo "9. SIGSTOPped, checkpointed: kcheckpoint recover"; bounded "$KC" recover --json "$ROOT"
echo "10. after: kcheckpoint state"; bounded "$KC" state --json "$ROOT"
kill -CONT "$ROOT" 2>/dev/null; sleep 0.3
echo "11. continued: kcheckpoint recover"; bounded "$KC" recover --json "$ROOT"
before=$(cat "$WORK/st"); kill -USR1 "$ROOT"
for _ in $(seq 600); do [ "$(cat "$WORK/st")" != "$before" ] && break; sleep 0.05; done
echo "12. workload: $(cat "$WORK/st")"
fi
C="$BIN/cuda_ckpt"
state() { "$C" --get-state --pid "$ROOT" | sed -n 's/^state //p'; }
kill -STOP "$ROOT"; sleep 0.3
echo "13. SIGSTOPped, running GPU: restore thread id"; bounded "$C" --op restore-tid --pid "$ROOT"
sleep 100 & SL=$!; sleep 0.2; kill -STOP $SL
echo "14. SIGSTOPped process without CUDA: get-state, restore-tid"; bounded "$C" --get-state --pid $SL; bounded "$C" --op restore-tid --pid $SL
kill -9 $SL
echo "15. SIGSTOPped, running GPU: lock"; bounded "$C" --op lock --pid "$ROOT"
kill -CONT "$ROOT"; sleep 1
echo "16. continued: state $(state)"
s=$(state); [ "$s" = 1 ] && bounded "$C" --op unlock --pid "$ROOT"
bounded "$C" --toggle --pid "$ROOT"
echo "17. checkpointed: state $(state)"
kill -STOP "$ROOT"; sleep 0.3
echo "18. SIGSTOPped, checkpointed: restore"; bounded "$C" --op restore --pid "$ROOT"
kill -CONT "$ROOT"; sleep 1
echo "19. continued: state $(state)"
s=$(state); [ "$s" = 2 ] && bounded "$C" --op restore --pid "$ROOT"; s=$(state); [ "$s" = 1 ] && bounded "$C" --op unlock --pid "$ROOT"
before=$(cat "$WORK/st"); kill -USR1 "$ROOT"
for _ in $(seq 600); do [ "$(cat "$WORK/st")" != "$before" ] && break; sleep 0.05; done
echo "20. workload: $(cat "$WORK/st"), state $(state)"
