#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# GPU benchmark: the same workload dumped and restored by kcheckpoint and by
# the manual two-stage flow (cuda_ckpt = cuda-checkpoint's driver calls, one
# process after the other, then plain criu), verified after each restore,
# printed side by side.  Needs root, an NVIDIA GPU, CRIU >= 4.1.
#
#   bench/gpu_bench.sh [--gib N] [--procs P] [--cold] [--thp always|madvise] [--kc-thp MODE]
#                      [--archive] [--manual-first] [--manual-like-kc] [--kc-restore-opt OPT]...
#
# --kc-restore-opt passes OPT to kcheckpoint's restore alone (--no-fill-huge,
# say); the tag gets "-ro" and the options.
#
# --manual-like-kc gives the manual flow's criu dump kcheckpoint's CRIU
# options (-v4, --leave-stopped, then SIGKILL, untimed): with it a
# difference in the CRIU stage is not the options'.
#
# --thp sets the system's THP mode for the whole run (both flows); --kc-thp
# passes --thp MODE to kcheckpoint alone, which sets it only while it runs,
# so the manual flow keeps the system's mode: what a user of either gets.
#
# The flow that runs first touches fresh VM memory (a lent VM grows its
# memory on first use): --manual-first swaps the order to expose that.
#
# Environment: KC (kcheckpoint), KCHECKPOINT_CRIU (criu), BIN (dir with
# gpu_workload and cuda_ckpt), WORK (images; default /var/tmp/kc-bench),
# OUT (where JSON and logs are kept).  KC_SAMPLE=1 samples the threads'
# kernel stacks during kcheckpoint's dump and restore and the manual flow's
# GPU restore (bench/thread_sampler.py; OUT/sample-*.txt).
set -euo pipefail
GIB=2 PROCS=1 COLD=0 THP="" KC_THP="" ARCHIVE=0 ORDER=kc-first LIKE_KC=0 KC_ROPTS=()
while [ $# -gt 0 ]; do
	case $1 in
	--gib) GIB=$2; shift ;;
	--procs) PROCS=$2; shift ;;
	--cold) COLD=1 ;;
	--thp) THP=$2; shift ;;
	--kc-thp) KC_THP=$2; shift ;;
	--archive) ARCHIVE=1 ;;
	--manual-first) ORDER=manual-first ;;
	--manual-like-kc) LIKE_KC=1 ;;
	--kc-restore-opt) KC_ROPTS+=("$2"); shift ;;
	*) echo "gpu_bench: unknown option '$1'" >&2; exit 2 ;;
	esac
	shift
done
KC=${KC:-kcheckpoint}
CRIU=${KCHECKPOINT_CRIU:-criu}
BIN=${BIN:?BIN must name the dir holding gpu_workload and cuda_ckpt}
WORK=${WORK:-/var/tmp/kc-bench}
OUT=${OUT:-$WORK/out}
TAG=g${GIB}p${PROCS}$([ $COLD = 1 ] && echo c || echo w)${THP:+-$THP}${KC_THP:+-kc$KC_THP}${KCHECKPOINT_PREFETCH:+-pf$KCHECKPOINT_PREFETCH}$([ $ORDER = manual-first ] && echo -mf || true)$([ $LIKE_KC = 1 ] && echo -like || true)$([ ${#KC_ROPTS[@]} -gt 0 ] && printf -- '-ro%s' "${KC_ROPTS[@]}" | tr -c 'a-z0-9-' '_' || true)
mkdir -p "$WORK" "$OUT"
THP_FILE=/sys/kernel/mm/transparent_hugepage/enabled
OLD_THP=$(sed -n 's/.*\[\(.*\)\].*/\1/p' $THP_FILE)
ROOT_PID=
cleanup() {
	[ -n "$ROOT_PID" ] && pkill -9 -s "$ROOT_PID" 2>/dev/null || true
	[ -n "$THP" ] && echo "$OLD_THP" >$THP_FILE
	rm -rf "$WORK/img-$TAG"
}
trap cleanup EXIT
SAMPLER=
sample_start() {
	[ "${KC_SAMPLE:-0}" = 1 ] || return 0
	python3 "$(dirname "$0")/thread_sampler.py" "$OUT/sample-$1-$TAG.txt" kcheckpoint gpu_workload &
	SAMPLER=$!
	sleep 0.2
}
sample_stop() {
	[ -n "$SAMPLER" ] || return 0
	kill -TERM "$SAMPLER"; wait "$SAMPLER" || true; SAMPLER=
	cat "$OUT/sample-$1-$TAG.txt"
}
[ -n "$THP" ] && echo "$THP" >$THP_FILE
PER=$(python3 -c "print($GIB/$PROCS)")

now() { date +%s.%N; }
status_field() { tr ' ' '\n' <"$1" | sed -n "s/^$2=//p"; }

start_tree() { # a shell with PROCS workloads below it, in its own session
	rm -f "$WORK"/st.* "$WORK/root.pid"
	setsid -f sh -c "echo \$\$ >$WORK/root.pid; for i in \$(seq $PROCS); do $BIN/gpu_workload --gib $PER --seed \$i --status $WORK/st.\$i & done; wait" </dev/null >"$OUT/workload-$TAG.log" 2>&1
	for _ in $(seq 1200); do
		[ "$(ls "$WORK"/st.* 2>/dev/null | wc -l)" = "$PROCS" ] && break
		sleep 0.1
	done
	ROOT_PID=$(cat "$WORK/root.pid")
	PIDS=$(for f in "$WORK"/st.*; do status_field "$f" pid; done | tr '\n' ' ')
}

probe_all() { # SIGUSR1: each workload verifies all its VRAM; prints "counters mismatches"
	local f before
	for f in "$WORK"/st.*; do
		before=$(cat "$f")
		kill -USR1 "$(status_field "$f" pid)"
		for _ in $(seq 600); do [ "$(cat "$f")" != "$before" ] && break; sleep 0.05; done
		grep -q error= "$f" && { echo "gpu_bench: $(cat "$f")" >&2; exit 1; }
	done
	local c=0 m=0
	for f in "$WORK"/st.*; do
		c=$((c + $(status_field "$f" counter)))
		m=$((m + $(status_field "$f" mismatches)))
	done
	echo "$c $m"
}

verify() { # $1 = counters before
	read -r c m < <(probe_all)
	[ "$m" = 0 ] || { echo "gpu_bench: $m VRAM mismatches after restore" >&2; exit 1; }
	[ "$c" -ge "$1" ] || { echo "gpu_bench: counter went back ($c < $1)" >&2; exit 1; }
	echo "verified: mismatches 0, counters $1 -> $c"
}

drop_caches() { [ $COLD = 1 ] || return 0; sync; echo 3 >/proc/sys/vm/drop_caches || echo "gpu_bench: drop_caches refused" >&2; }
wait_free() { # bounded: 120 s per pid
	for p in $ROOT_PID $PIDS; do
		for _ in $(seq 12000); do [ -e "/proc/$p" ] || break; sleep 0.01; done
		[ -e "/proc/$p" ] && { echo "gpu_bench: pid $p still taken after 120 s" >&2; exit 1; }
	done
	return 0
}

echo "== gpu_bench $TAG: $PROCS process(es), $GIB GiB VRAM in all, THP $(sed -n 's/.*\[\(.*\)\].*/\1/p' $THP_FILE)${KC_THP:+ (kcheckpoint: --thp $KC_THP)}"

IMG=$WORK/img-$TAG
KC_OPTS=()
[ -n "$KC_THP" ] && KC_OPTS+=(--thp "$KC_THP")

run_kc() {
# kcheckpoint
start_tree
read -r C0 _ < <(probe_all)
IMG=$WORK/img-$TAG
rm -rf "$IMG"
# wall time of each command, as for the manual flow's commands
sample_start kc-dump
k0=$(now)
if [ $ARCHIVE = 1 ]; then
	"$KC" dump ${KC_OPTS[@]+"${KC_OPTS[@]}"} --json -o "$IMG.tar.zst" --work-dir "$WORK" "$ROOT_PID" >"$OUT/kc-dump-$TAG.json"
else
	"$KC" dump ${KC_OPTS[@]+"${KC_OPTS[@]}"} --json -D "$IMG" "$ROOT_PID" >"$OUT/kc-dump-$TAG.json"
fi
k1=$(now)
sample_stop kc-dump
wait_free
drop_caches
sample_start kc
k2=$(now)
if [ $ARCHIVE = 1 ]; then
	"$KC" restore ${KC_OPTS[@]+"${KC_OPTS[@]}"} ${KC_ROPTS[@]+"${KC_ROPTS[@]}"} --json --work-dir "$WORK" "$IMG.tar.zst" >"$OUT/kc-restore-$TAG.json"
	k3=$(now) # before the archive's removal, which takes seconds for tens of GB
	ls -l "$IMG.tar.zst" >"$OUT/kc-archive-$TAG.txt"
	rm -f "$IMG.tar.zst"
else
	"$KC" restore ${KC_OPTS[@]+"${KC_OPTS[@]}"} ${KC_ROPTS[@]+"${KC_ROPTS[@]}"} --json "$IMG" >"$OUT/kc-restore-$TAG.json"
	k3=$(now)
fi
sample_stop kc
python3 -c "import json,sys; t=[float(x) for x in sys.argv[1:5]]; print(json.dumps({'dump': t[1]-t[0], 'restore': t[3]-t[2]}))" \
	"$k0" "$k1" "$k2" "$k3" >"$OUT/kc-wall-$TAG.json"
verify "$C0"
pkill -9 -s "$ROOT_PID" || true
wait_free
rm -rf "$IMG"

}

run_manual() {
# manual flow: cuda-checkpoint per process, then criu; and back
start_tree
read -r C0 _ < <(probe_all)
mkdir -p "$IMG"
t0=$(now)
for p in $PIDS; do "$BIN/cuda_ckpt" --toggle --pid "$p" >/dev/null; done
t1=$(now)
if [ $LIKE_KC = 1 ]; then
	"$CRIU" dump -t "$ROOT_PID" -D "$IMG" -o dump.log -v4 --leave-stopped
	t2=$(now)
	pkill -9 -s "$ROOT_PID" || true
else
	"$CRIU" dump -t "$ROOT_PID" -D "$IMG" -o dump.log
	t2=$(now)
fi
wait_free
drop_caches
t3=$(now)
"$CRIU" restore -d -D "$IMG" -o restore.log
sample_start manual-gpu
t4=$(now)
for p in $PIDS; do "$BIN/cuda_ckpt" --toggle --pid "$p" >/dev/null; done
t5=$(now)
sample_stop manual-gpu
verify "$C0"
python3 -c "import json,sys; t=[float(x) for x in sys.argv[1:7]]; print(json.dumps({'gpu_checkpoint': t[1]-t[0], 'criu_dump': t[2]-t[1], 'criu_restore': t[4]-t[3], 'gpu_restore': t[5]-t[4], 'image_bytes': int(sys.argv[7])}))" \
	"$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$(du -sb "$IMG" | cut -f1)" >"$OUT/manual-$TAG.json"
pkill -9 -s "$ROOT_PID" || true
wait_free

}

if [ $ORDER = kc-first ]; then run_kc; run_manual; else run_manual; run_kc; fi

python3 - "$OUT" "$TAG" <<'PY'
import json, sys
out, tag = sys.argv[1], sys.argv[2]
d = json.load(open(f"{out}/kc-dump-{tag}.json"))
r = json.load(open(f"{out}/kc-restore-{tag}.json"))
m = json.load(open(f"{out}/manual-{tag}.json"))
w = json.load(open(f"{out}/kc-wall-{tag}.json"))
st = {s["stage"]: s for s in d["stages"] + r["stages"]}
sec = lambda k: st[k]["seconds"] if k in st else 0.0
# driver start-up counts on both sides: cuda_ckpt runs cuInit in each call
rows = [("gpu init+lock+ckpt", sec("gpu-init") + sec("gpu-lock") + sec("gpu-checkpoint"), m["gpu_checkpoint"]),
        ("criu dump", sec("criu-dump"), m["criu_dump"]),
        ("memory-read", sec("memory-read"), 0.0),
        ("archive", sec("archive"), 0.0),
        ("archive-sync", sec("archive-sync"), 0.0),
        ("dump (wall)", w["dump"], m["gpu_checkpoint"] + m["criu_dump"]),
        ("unpack", sec("unpack"), 0.0),
        ("criu restore", sec("criu-restore"), m["criu_restore"]),
        ("memory-fill", sec("memory-fill"), 0.0),
        ("gpu (wait)+rst+unlock", sec("gpu-init-wait") + sec("gpu-restore") + sec("gpu-unlock"), m["gpu_restore"]),
        ("fill-wait (beside gpu)", sec("fill-wait"), 0.0),
        ("restore (wall)", w["restore"], m["criu_restore"] + m["gpu_restore"])]
vram = d.get("vram_bytes", 0)
print(f"{'stage':22} {'kcheckpoint':>12} {'manual':>10} {'ratio':>7}   (VRAM {vram/1e9:.2f} GB, image {m['image_bytes']/1e9:.2f} GB)")
for name, a, b in rows:
    ratio = f"{a / b:.2f}" if b > 0 else "-"
    print(f"{name:22} {a:12.3f} {b:10.3f} {ratio:>7}")
ab = [s for s in d["stages"] if s["stage"] == "archive"]
if ab and ab[0].get("bytes_out"):
    print(f"archive: {ab[0]['bytes_out']/1e9:.2f} GB written for {ab[0].get('bytes', 0)/1e9:.2f} GB of image")
if "criu" in d:
    print("criu dump stats:", json.dumps(d["criu"]))
PY
