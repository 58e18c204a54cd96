#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# PyTorch workloads on a GPU node, each checkpointed by kcheckpoint mid-run,
# restored, and checked against an uninterrupted run:
#   train-fork, train-spawn, train-forkserver, train-noworkers
#       bench/ml/train.py (Llama-shaped model, AdamW, a DataLoader with
#       WORKERS persistent workers started by fork/spawn/forkserver, or none):
#       a reference run, then a run dumped after step PAUSE_AT of STEPS,
#       restored and run to the end; both loss logs must be equal, bit for bit
#   serve
#       bench/ml/serve.py (torch.compile'd Llama behind HTTP, with inductor's
#       compile worker pool): cold start to /health and first answer, dump
#       (--tcp-close when this kcheckpoint has it; no client is connected),
#       restore, time from the restore's start to the first answer; every
#       answer must equal the one given before the dump
#   train-fork-int, train-fork-kill
#       train-fork whose dump gets SIGINT after INT_AFTER s (6: in its CPU
#       stage) / SIGKILL after KILL_AFTER s (1.5: in its GPU stage, then
#       `kcheckpoint recover`); the job must then run on to the same losses
#   two-procs
#       bench/ml/two_procs.py (2 CUDA processes by torch.multiprocessing
#       spawn, ~1.5 GiB each), checked like training
#
#   bench/ml/ml-suite.sh [CASE...]          (default: all six, in that order)
#
# Environment: KC (kcheckpoint; default from PATH), KCHECKPOINT_CRIU, WORK
# (archives, reference logs; default /var/tmp/kc-ml), LOGDIR (default
# $WORK/logs: <case>.log with the workloads' and kcheckpoint's output,
# <case>-dump.json, <case>-restore.json, summary.txt), COLD=1 (drop the page
# cache between dump and restore), PYTHON (python3), STEPS (40), PAUSE_AT
# (20), WORKERS (2), TRAIN_ARGS / SERVE_ARGS / TWO_ARGS (more options for
# the workload, e.g. TRAIN_ARGS="--hidden 2048 --layers 16"), PORT (18431),
# KC_DUMP_OPTS / KC_RESTORE_OPTS (more kcheckpoint options, e.g. "--thp
# always"), DIR=1 (images dirs instead of archives: dump -D, restore from
# the dir, where the memory fills beside the GPU restore), KEEP_ARCHIVES=1,
# and the timeouts in seconds: T_START (to reach
# the pause or get warm; 300), T_RUN (to finish after the restore; 300),
# T_KC (one kcheckpoint command; 300).
#
# Prints a few lines per case, then one summary line per case:
#   case vram_gib dump_s restore_s first_answer_s cold_start_s bit_exact procs
# dump_s, restore_s: wall time of the kcheckpoint command; first_answer_s
# (serve): from the restore's start to the first answer; cold_start_s (serve):
# from launch to the first answer; procs: processes of the tree alive (not
# zombies) after the restore / in the tree before the dump.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
KC=${KC:-kcheckpoint}
PY=${PYTHON:-python3}
WORK=${WORK:-/var/tmp/kc-ml}
LOGDIR=${LOGDIR:-$WORK/logs}
COLD=${COLD:-0}
STEPS=${STEPS:-40} PAUSE_AT=${PAUSE_AT:-20} WORKERS=${WORKERS:-2} PORT=${PORT:-18431}
T_START=${T_START:-300} T_RUN=${T_RUN:-300} T_KC=${T_KC:-300}
read -r -a TRAIN_ARGS <<<"${TRAIN_ARGS:-}"
read -r -a SERVE_ARGS <<<"${SERVE_ARGS:-}"
read -r -a TWO_ARGS <<<"${TWO_ARGS:-}"
read -r -a DUMP_OPTS <<<"${KC_DUMP_OPTS:-}"
read -r -a RESTORE_OPTS <<<"${KC_RESTORE_OPTS:-}"
CASES=${*:-train-fork train-spawn train-forkserver train-noworkers serve two-procs}
mkdir -p "$WORK" "$LOGDIR" || exit 1
export PYTHONUNBUFFERED=1

CASE=suite L=/dev/null ROOT='' ARCH=''
SUMMARY=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
say() { echo "$CASE: $*" | tee -a "$L"; }
note() { echo "-- $*" >>"$L"; }

json() { # FILE KEY: a top-level value of a --json report ("" if none); KEY "stages": one line
	"$PY" - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
if sys.argv[2] == "stages":
    print(", ".join(f"{s['stage']} {s['seconds']:.2f}" for s in d.get("stages", [])))
else:
    print(d.get(sys.argv[2], ""))
PY
}

tree_pids() { # ROOT: it and its descendants, one pid a line
	[ -n "${1:-}" ] && [ -e "/proc/$1" ] || return 0
	ps -e -o pid=,ppid= | awk -v r="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END { q[n = 1] = r; while (n) { p = q[n--]; print p; m = split(kids[p], k, " "); for (i = 1; i <= m; i++) q[++n] = k[i] } }'
}

ps_tree() { # ROOT: the tree, for the log
	local pids; pids=$(tree_pids "$1" | paste -sd, -)
	[ -n "$pids" ] && ps -o pid=,ppid=,stat=,rss=,args= -p "$pids" | cut -c1-150
}

gone() { # SECONDS PID...: true once none of the pids exists (a zombie still does)
	local end=$(($(date +%s) + $1)) p left
	shift
	while :; do
		left=
		for p in "$@"; do [ -e "/proc/$p" ] && { left=$p; break; }; done
		[ -z "$left" ] && return 0
		[ "$(date +%s)" -ge $end ] && return 1
		sleep 0.05
	done
}

kill_tree() { # ROOT: SIGKILL to its session (it made one) and to its descendants
	[ -n "${1:-}" ] || return 0
	local pids; pids=$(tree_pids "$1")
	[ "$1" != "$(ps -o sid= -p $$ | tr -d ' ')" ] && pkill -9 -s "$1" 2>/dev/null
	# shellcheck disable=SC2086
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	# shellcheck disable=SC2086
	gone 30 $pids || note "pids still there 30 s after SIGKILL: $pids"
}
CLIENT=''
trap 'kill_tree "$ROOT"; [ -n "$CLIENT" ] && kill "$CLIENT" 2>/dev/null' EXIT
trap 'exit 130' INT TERM

launch() { # PIDFILE COMMAND...: runs it in a session of its own (CRIU restores a session leader), output to the case log
	local pf=$1 i
	shift
	rm -f "$pf"
	note "start: $*"
	# shellcheck disable=SC2016
	setsid -f bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pf" "$@" </dev/null >>"$L" 2>&1
	for i in $(seq 200); do [ -s "$pf" ] && break; sleep 0.05; done
	ROOT=$(cat "$pf" 2>/dev/null)
	[ -n "$ROOT" ] || { say "could not start $1"; return 1; }
}

wait_until() { # SECONDS WHAT TEST...: polls TEST; fails at the timeout or once ROOT is gone
	local end=$(($(date +%s) + $1)) what=$2
	shift 2
	until "$@"; do
		if [ ! -e "/proc/$ROOT" ]; then
			"$@" && return 0
			say "$what: the workload ended first (output: $L)"
			return 1
		fi
		[ "$(date +%s)" -ge $end ] && { say "$what: timed out"; return 1; }
		sleep 0.05
	done
}
has_done() { grep -qx 'done' "$1" 2>/dev/null; }

vram_smi() { # ROOT: MiB its tree holds, by nvidia-smi
	local pids; pids=" $(tree_pids "$1" | tr '\n' ' ') "
	nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null |
		awk -F', *' -v pids="$pids" 'index(pids, " " $1 " ") { s += $2 } END { print s + 0 }'
}

kc_err() { # RC: what the failed kcheckpoint command said
	[ "$1" = 124 ] && { echo "timed out after $T_KC s (T_KC)"; return; }
	grep -v '^ ' "$WORK/kc.err" | tail -n 2 | tr '\n' ' '
}

do_dump() { # [KC OPTION...]: dumps ROOT's tree into ARCH, waits for its pids to be free
	local t0 rc vb smi
	ARCH=$WORK/$CASE.tar.zst
	DEST=(-o "$ARCH" --work-dir "$WORK")
	if [ "${DIR:-0}" = 1 ]; then
		ARCH=$WORK/$CASE.d
		DEST=(-D "$ARCH")
	fi
	rm -rf "$ARCH"
	BEFORE=$(tree_pids "$ROOT" | sort -n | tr '\n' ' ')
	note "tree before the dump:"
	ps_tree "$ROOT" >>"$L"
	smi=$(vram_smi "$ROOT")
	note "nvidia-smi: the tree holds $smi MiB; kcheckpoint dump $* ${DUMP_OPTS[*]}"
	t0=$(now)
	timeout -k 10 "$T_KC" "$KC" dump --json "${DEST[@]}" \
		${DUMP_OPTS[@]+"${DUMP_OPTS[@]}"} "$@" "$ROOT" >"$LOGDIR/$CASE-dump.json" 2>"$WORK/kc.err"
	rc=$?
	DUMP_S=$(since "$t0")
	cat "$WORK/kc.err" >>"$L"
	vb=$(json "$LOGDIR/$CASE-dump.json" vram_bytes)
	if [ -n "$vb" ] && [ "$vb" != 0 ]; then
		VRAM_GIB=$(awk -v b="$vb" 'BEGIN { printf "%.2f", b / 2^30 }')
	else
		VRAM_GIB=$(awk -v m="$smi" 'BEGIN { printf "%.2f", m / 1024 }')
	fi
	if [ $rc != 0 ]; then
		say "dump FAILED (exit $rc) after $DUMP_S s: $(kc_err $rc)"
		return 1
	fi
	say "dump $DUMP_S s, $VRAM_GIB GiB VRAM, $(wc -w <<<"$BEFORE") processes, archive $(du -h "$ARCH" | cut -f1) ($(json "$LOGDIR/$CASE-dump.json" stages))"
	# shellcheck disable=SC2086
	gone 60 $BEFORE || { say "pids still taken 60 s after the dump: $BEFORE"; return 1; }
	if [ "$COLD" = 1 ]; then
		sync
		echo 3 >/proc/sys/vm/drop_caches || say "drop_caches refused"
	fi
}

do_restore() { # [T0]: restores ARCH (timed from T0, default now); sets RESTORE_T0, RESTORE_S, PROCS
	local rc root p alive=0 n=0 st
	RESTORE_T0=${1:-$(now)}
	local wd=(--work-dir "$WORK")
	[ "${DIR:-0}" = 1 ] && wd=()
	timeout -k 10 "$T_KC" "$KC" restore --json ${wd[@]+"${wd[@]}"} \
		${RESTORE_OPTS[@]+"${RESTORE_OPTS[@]}"} "$ARCH" >"$LOGDIR/$CASE-restore.json" 2>"$WORK/kc.err"
	rc=$?
	RESTORE_S=$(since "$RESTORE_T0")
	cat "$WORK/kc.err" >>"$L"
	if [ $rc != 0 ]; then
		say "restore FAILED (exit $rc) after $RESTORE_S s: $(kc_err $rc)"
		return 1
	fi
	root=$(json "$LOGDIR/$CASE-restore.json" root_pid)
	[ "$root" = "$ROOT" ] || say "restore: root pid '$root', dumped $ROOT"
	for p in $BEFORE; do
		n=$((n + 1))
		st=$(ps -o stat= -p "$p" 2>/dev/null)
		[ -n "$st" ] && [ "${st#Z}" = "$st" ] && alive=$((alive + 1))
	done
	PROCS=$alive/$n
	note "tree after the restore:"
	ps_tree "$ROOT" >>"$L"
	say "restore $RESTORE_S s, $PROCS processes alive ($(json "$LOGDIR/$CASE-restore.json" stages))"
}

alive_count() { # PID...: how many exist and are no zombie
	local p st n=0
	for p in "$@"; do
		st=$(ps -o stat= -p "$p" 2>/dev/null)
		[ -n "$st" ] && [ "${st#Z}" = "$st" ] && n=$((n + 1))
	done
	echo "$n"
}

do_interrupted() { # INTERRUPT=SIG:DELAY: a dump of ROOT gets SIG after DELAY s; after KILL, recover
	local sig=${INTERRUPT%%:*} delay=${INTERRUPT#*:} t0 kpid rc
	ARCH=$WORK/$CASE.tar.zst
	rm -f "$ARCH"
	BEFORE=$(tree_pids "$ROOT" | sort -n | tr '\n' ' ')
	note "tree before the dump:"
	ps_tree "$ROOT" >>"$L"
	t0=$(now)
	"$KC" dump -o "$ARCH" --work-dir "$WORK" ${DUMP_OPTS[@]+"${DUMP_OPTS[@]}"} "$ROOT" >/dev/null 2>"$WORK/kc.err" &
	kpid=$!
	sleep "$delay"
	kill -s "$sig" "$kpid"
	wait "$kpid"
	rc=$?
	DUMP_S=$(since "$t0")
	cat "$WORK/kc.err" >>"$L"
	# shellcheck disable=SC2086
	say "dump got SIG$sig after $delay s: exit $rc after $DUMP_S s ($(grep '^kcheckpoint:' "$WORK/kc.err" | head -n 1)); CUDA state: $("$KC" state "$ROOT" 2>&1 | awk 'NR > 1 { print $3 }' | sort | uniq -c | tr -s ' \n' ' ')"
	if [ "$sig" = KILL ]; then
		timeout -k 10 "$T_KC" "$KC" recover "$ROOT" >>"$L" 2>&1
		rc=$?
		say "recover: exit $rc; CUDA state: $("$KC" state "$ROOT" 2>&1 | awk 'NR > 1 { print $3 }' | sort | uniq -c | tr -s ' \n' ' ')"
	fi
	[ -e "$ARCH" ] && say "an archive was published although the dump was interrupted: $ARCH"
	# shellcheck disable=SC2086
	PROCS=$(alive_count $BEFORE)/$(wc -w <<<"$BEFORE")
	# shellcheck disable=SC2086
	local states
	states=$(ps -o stat= -p "$(tr ' ' ',' <<<"${BEFORE% }")" | tr -s ' \n' ' ')
	say "$PROCS processes alive, states: $states"
	case " $states" in *" T"*) say "a process is left stopped"; return 1 ;; esac
}

first_diff() { # A B: the first line where B differs from A
	[ -e "$2" ] || { echo "$2 is missing"; return; }
	awk 'NR == FNR { a[FNR] = $0; n = FNR; next }
		{ m = FNR }
		!d && (FNR > n || a[FNR] != $0) { printf "line %d: \"%s\" vs \"%s\"", FNR, (FNR > n ? "EOF" : a[FNR]), $0; d = 1 }
		END { if (!d && m < n) printf "line %d: \"%s\" vs EOF", m + 1, a[m + 1] }' "$1" "$2"
}

compare() { # REF RUN SUFFIX...: REF$s and RUN$s equal for each suffix (and "" first)
	local a=$1 b=$2 s
	shift 2
	for s in "" "$@"; do
		if ! cmp -s "$a$s" "$b$s"; then
			EXACT=NO
			say "bit-exact NO: $(basename "$a$s") vs $(basename "$b$s"), $(first_diff "$a$s" "$b$s")"
			return 1
		fi
	done
	EXACT=yes
	say "bit-exact yes ($(cat "$a" "${@/#/$a}" | wc -l) lines)"
}

paused_case() { # "SUFFIX..." COMMAND...: the logs LOG plus LOG$SUFFIX are compared
	local sfx=$1 A=$WORK/$CASE.ref B=$WORK/$CASE.run t0
	shift
	rm -f "$A" "$A".* "$B" "$B".*
	t0=$(now)
	launch "$A.pid" "$@" --log "$A" || return 1
	wait_until $((T_START + T_RUN)) "reference run" has_done "$A" || return 1
	gone 30 "$ROOT"
	kill_tree "$ROOT"
	ROOT=''
	say "reference run $(since "$t0") s"
	launch "$B.pid" "$@" --log "$B" --pause-at "$PAUSE_AT" || return 1
	wait_until "$T_START" "run to the pause" test -e "$B.ready" || return 1
	if [ -n "${INTERRUPT:-}" ]; then
		do_interrupted || return 1
	else
		do_dump || return 1
		do_restore || return 1
	fi
	touch "$B.go"
	t0=$(now)
	wait_until "$T_RUN" "restored run" has_done "$B"
	note "restored run: done after $(since "$t0") s"
	gone 30 "$ROOT" || note "the restored run has not exited 30 s after done"
	# shellcheck disable=SC2086
	compare "$A" "$B" $sfx
}

case_train() { # START WORKERS
	paused_case "" "$PY" "$HERE/train.py" --steps "$STEPS" --start "$1" --workers "$2" \
		${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
}

case_two_procs() {
	paused_case ".r0 .r1" "$PY" "$HERE/two_procs.py" --steps "$STEPS" ${TWO_ARGS[@]+"${TWO_ARGS[@]}"}
}

client() { # health|gen ARGS...: bench/ml/client.py against the server, bounded
	timeout -k 5 $((T_START + 30)) "$PY" "$HERE/client.py" "$1" "http://127.0.0.1:$PORT" "${@:2}" 2>>"$L"
}

case_serve() {
	local prompts=('1,2,3,4,5,6,7,8,9,10,11,12' '100,200,300,400' '31999,5,17,5,31999' '7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7')
	local before=() t0 h r i rc tcp=()
	if ! "$PY" -c 'import socket, sys; sys.exit(socket.socket().connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0)' "$PORT"; then
		say "port $PORT is taken (set PORT)"
		return 1
	fi
	rm -f "$WORK/serve.ready"
	# a cold start compiles for real (inductor's worker pool and all):
	# an earlier run's cache would make it a warm start without the pool
	export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor-cache.$$.$RANDOM
	t0=$(now)
	launch "$WORK/serve.pid" "$PY" "$HERE/serve.py" --port "$PORT" --ready-file "$WORK/serve.ready" \
		${SERVE_ARGS[@]+"${SERVE_ARGS[@]}"} || return 1
	h=$(client health --t0 "$t0" --timeout "$T_START") || { say "no /health 200 in $T_START s"; return 1; }
	r=$(client gen --ids "${prompts[0]}" --t0 "$t0" --timeout 60) || { say "no answer"; return 1; }
	COLD_S=$(cut -d' ' -f2 <<<"$r")
	before[0]=$(cut -d' ' -f3 <<<"$r")
	for i in 1 2 3; do
		r=$(client gen --ids "${prompts[i]}" --timeout 60) || { say "no answer to prompt $i"; return 1; }
		before[i]=$(cut -d' ' -f3 <<<"$r")
	done
	say "cold start: /health 200 after ${h#health } s, first answer after $COLD_S s: ${before[0]}"
	if "$KC" dump --help 2>&1 | grep -q -- --tcp-close; then
		tcp=(--tcp-close)
	else
		note "this kcheckpoint has no --tcp-close: dumping without (no connection is open)"
	fi
	sleep 0.3 # the handler threads close their sockets
	do_dump ${tcp[@]+"${tcp[@]}"} || return 1
	# the first request is sent while the restore runs (refused until the socket is back): no
	# client start-up in the figure
	t0=$(now)
	client gen --ids "${prompts[0]}" --t0 "$t0" --timeout 120 >"$WORK/first" &
	CLIENT=$!
	do_restore "$t0" || return 1
	wait "$CLIENT"
	rc=$?
	CLIENT=''
	r=$(cat "$WORK/first")
	[ $rc = 0 ] || { EXACT=NO; say "no answer after the restore"; return 1; }
	FIRST_S=$(cut -d' ' -f2 <<<"$r")
	EXACT=yes
	[ "$(cut -d' ' -f3 <<<"$r")" = "${before[0]}" ] || { EXACT=NO; say "answer after the restore: $(cut -d' ' -f3 <<<"$r")"; }
	for i in 1 2 3 1 2 3; do
		r=$(client gen --ids "${prompts[i]}" --timeout 60) || { EXACT=NO; say "no answer to prompt $i after the restore"; break; }
		[ "$(cut -d' ' -f3 <<<"$r")" = "${before[i]}" ] || { EXACT=NO; say "prompt $i: $(cut -d' ' -f3 <<<"$r") instead of ${before[i]}"; }
	done
	say "first answer $FIRST_S s after the restore's start; 7 answers after the restore, same as before: $EXACT"
	[ $EXACT = yes ]
}

run_case() {
	local t0 rc
	CASE=$1 L=$LOGDIR/$1.log ROOT='' ARCH=''
	VRAM_GIB=- DUMP_S=- RESTORE_S=- FIRST_S=- COLD_S=- EXACT=- PROCS=-
	: >"$L"
	t0=$(now)
	case $1 in
	train-fork) case_train fork "$WORKERS" ;;
	train-spawn) case_train spawn "$WORKERS" ;;
	train-forkserver) case_train forkserver "$WORKERS" ;;
	train-noworkers) case_train fork 0 ;;
	# the dump interrupted: ^C in its CPU stage; SIGKILL in its GPU stage, then recover
	train-fork-int) INTERRUPT=INT:${INT_AFTER:-6} case_train fork "$WORKERS" ;;
	train-fork-kill) INTERRUPT=KILL:${KILL_AFTER:-1.5} case_train fork "$WORKERS" ;;
	serve) case_serve ;;
	two-procs) case_two_procs ;;
	*) say "unknown case (train-fork train-spawn train-forkserver train-noworkers train-fork-int train-fork-kill serve two-procs)"; false ;;
	esac
	rc=$?
	kill_tree "$ROOT"
	ROOT=''
	[ -n "$CLIENT" ] && kill "$CLIENT" 2>/dev/null && wait "$CLIENT" 2>/dev/null
	CLIENT=''
	[ "${KEEP_ARCHIVES:-0}" = 1 ] || rm -rf "$WORK/$CASE.tar.zst" "$WORK/$CASE.d"
	[ $rc = 0 ] || { say "FAILED (log: $L)"; [ "$EXACT" = - ] && EXACT=FAIL; }
	say "$(since "$t0") s"
	SUMMARY+=("$(printf '%-17s %8s %7s %9s %14s %12s %9s %5s' "$CASE" "$VRAM_GIB" "$DUMP_S" "$RESTORE_S" \
		"$FIRST_S" "$COLD_S" "$EXACT" "$PROCS")")
}

{
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1
	echo "$(uname -r), $(nproc) CPUs, COLD=$COLD, $("$KC" --version 2>&1 | head -n 1)"
	"$PY" -c 'import sys, torch, transformers; print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}")' 2>&1 | tail -n 1
} | tee "$LOGDIR/env.txt"
for c in $CASES; do run_case "$c"; done
{
	printf '%-17s %8s %7s %9s %14s %12s %9s %5s\n' case vram_gib dump_s restore_s first_answer_s cold_start_s bit_exact procs
	printf '%s\n' "${SUMMARY[@]}"
} | tee "$LOGDIR/summary.txt"
