#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# recover on the real driver, where CI has only the fake: a dump SIGKILLed
# after CRIU (tree stopped, GPU checkpointed) and a restore SIGKILLed at the
# start of its GPU restore (restore thread held), each recovered; between
# them a process stopped by its user, asked about and dumped (left running);
# then the workload checks all its VRAM.  Prints each step; exit 1 on the first
# failure.  KCHECKPOINT_TEST_PAUSE (src/core/report.c) picks the stage.
#
#   bench/recover_check.sh BINDIR [GIB]    (BINDIR: gpu_workload; KC: kcheckpoint)
set -uo pipefail
BIN=$(cd "$1" && pwd) GIB=${2:-2}
KC=${KC:-kcheckpoint}
WORK=${WORK:-/var/tmp/kc-recover}
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
ROOT=""
trap '[ -n "$ROOT" ] && pkill -9 -s "$ROOT" 2>/dev/null' EXIT
field() { tr ' ' '\n' <"$WORK/st" | sed -n "s/^$1=//p"; }
probe() { # all VRAM checked: "counter mismatches"
	local before
	before=$(cat "$WORK/st")
	kill -USR1 "$(field pid)"
	for _ in $(seq 1200); do [ "$(cat "$WORK/st")" != "$before" ] && break; sleep 0.05; done
	grep -q error= "$WORK/st" && { echo "workload: $(cat "$WORK/st")"; return 1; }
	echo "$(field counter) $(field mismatches)"
}
fail() { echo "recover_check: $*"; exit 1; }
paused() { # STAGE CMD...: runs kcheckpoint until STAGE, SIGKILLs it there
	local stage=$1
	shift
	rm -f "$WORK/pause"
	KCHECKPOINT_TEST_PAUSE=$stage KCHECKPOINT_TEST_PAUSE_FILE=$WORK/pause "$KC" "$@" >"$WORK/killed.log" 2>&1 &
	local p=$!
	for _ in $(seq 3000); do [ -e "$WORK/pause" ] && break; kill -0 $p 2>/dev/null || fail "$* ended before $stage: $(cat "$WORK/killed.log")"; sleep 0.05; done
	kill -9 $p
	wait $p 2>/dev/null
}
recover() {
	local t0 t1
	t0=$(date +%s.%N)
	timeout 120 "$KC" recover --json "$ROOT" >"$WORK/recover.json" 2>"$WORK/recover.err" || fail "recover: $(cat "$WORK/recover.err")"
	t1=$(date +%s.%N)
	grep -q "runs during the GPU restore" "$WORK/recover.err" && fail "recover did not hold: $(cat "$WORK/recover.err")"
	echo "recover: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s, $(python3 -c "import json; d=json.load(open('$WORK/recover.json')); print(', '.join(p['comm'] + ' ' + p['state'] + '/' + p['process'] for p in d['processes']))")"
}
setsid -f sh -c "echo \$\$ >$WORK/root.pid; exec $BIN/gpu_workload --gib $GIB --seed 3 --status $WORK/st" </dev/null >"$WORK/workload.log" 2>&1
for _ in $(seq 1200); do [ -s "$WORK/st" ] && break; sleep 0.1; done
ROOT=$(cat "$WORK/root.pid")
read -r c0 m0 < <(probe) || fail "no answer"
echo "workload $ROOT ($GIB GiB VRAM): counter $c0, mismatches $m0"

paused memory-read dump --fill-threads 4 -D "$WORK/img1" "$ROOT"
echo "dump killed at memory-read: $(timeout 60 "$KC" state --json "$ROOT" | python3 -c "import json,sys; print([(p['state'], p['process']) for p in json.load(sys.stdin)['processes']])")"
recover
read -r c1 m1 < <(probe) || fail "no answer after recover"
[ "$m1" = 0 ] && [ "$c1" -ge "$c0" ] || fail "after recover: counter $c1, mismatches $m1"
echo "after recover: counter $c0 -> $c1, mismatches 0"

# stopped by its user: state, and a dump left running, ask the driver
# through the restore thread alone; it stays stopped
kill -STOP "$ROOT"
sleep 0.3
echo "stopped: $(timeout 60 "$KC" state --json "$ROOT" | python3 -c "import json,sys; print([(p['state'], p['process']) for p in json.load(sys.stdin)['processes']])")"
t0=$(date +%s.%N)
timeout 300 "$KC" dump -q --leave-running --fill-threads 4 -D "$WORK/img0" "$ROOT" || fail "dump of the stopped process"
t1=$(date +%s.%N)
sleep 0.3
grep -q '^State:.*T' /proc/"$ROOT"/status || fail "not stopped after its dump: $(grep State /proc/"$ROOT"/status)"
echo "stopped process dumped, left running, in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s: still stopped, $(timeout 60 "$KC" state --json "$ROOT" | python3 -c "import json,sys; print([(p['state'], p['process']) for p in json.load(sys.stdin)['processes']])")"
kill -CONT "$ROOT"
read -r c3 m3 < <(probe) || fail "no answer after the dump of the stopped process"
[ "$m3" = 0 ] || fail "mismatches $m3"
echo "continued: counter $c3, mismatches 0"

timeout 300 "$KC" dump -q --fill-threads 4 -D "$WORK/img2" "$ROOT" || fail "dump"
for _ in $(seq 3000); do [ -e "/proc/$ROOT" ] || break; sleep 0.01; done
paused gpu-restore restore --fill-threads 4 "$WORK/img2"
echo "restore killed at gpu-restore: $(timeout 60 "$KC" state --json "$ROOT" | python3 -c "import json,sys; print([(p['state'], p['process']) for p in json.load(sys.stdin)['processes']])")"
recover
read -r c2 m2 < <(probe) || fail "no answer after recover"
[ "$m2" = 0 ] || fail "after recover: mismatches $m2"
echo "after recover: counter $c2, mismatches 0"
echo "recover_check: ok"
