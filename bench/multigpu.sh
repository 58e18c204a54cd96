#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a machine with two GPUs, each case verified after restore (all VRAM
# compared with the pattern, counter going on):
#   partial  a process on GPU 0 dumped, restored with --gpu-map G0=G1 alone
#            (kcheckpoint completes it into the permutation the driver wants)
#   both     a process using both GPUs dumped and restored as it was, then
#            dumped again and restored with its GPUs swapped
#
#   bench/multigpu.sh BUNDLE.tar.gz BIN_DIR [GIB] [CASE...]
set -uo pipefail
BUNDLE=$1 BIN=$(cd "$2" && pwd) GIB=${3:-2}
shift 3 2>/dev/null || shift $#
CASES=${*:-partial both}
mkdir -p /opt/kc && tar -xzf "$BUNDLE" -C /opt/kc
B=$(ls -d /opt/kc/kcheckpoint-*)
export KCHECKPOINT_CRIU=$B/bin/criu
KC=$B/bin/kcheckpoint
W=/var/tmp/kc-mg
G0=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | sed -n 1p)
G1=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | sed -n 2p)
[ -n "$G1" ] || { echo "multigpu: needs two GPUs, nvidia-smi lists one" >&2; exit 1; }
echo "gpu0 $G0 gpu1 $G1"
field() { tr ' ' '\n' <"$W/st" | sed -n "s/^$1=//p"; }
probe() {
	local old; old=$(cat "$W/st"); kill -USR1 "$P"
	for _ in $(seq 600); do [ "$(cat "$W/st")" != "$old" ] && break; sleep 0.05; done
	echo "status: $(cat "$W/st")"
}
apps() { nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader | sed 's/^/  app: /'; }
check() { # $1 = counter before
	[ "$(field mismatches)" = 0 ] && [ "$(field counter)" -ge "$1" ]
}
start() { # args for gpu_workload (env first)
	rm -rf "$W" && mkdir -p "$W"
	setsid -f env "$@" --status "$W/st" </dev/null >"$W/log" 2>&1
	for _ in $(seq 600); do [ -s "$W/st" ] && break; sleep 0.1; done
	P=$(field pid)
	probe
	apps
}
mem() { # MiB that process P holds on GPU $1
	nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits |
		awk -F', ' -v p="$P" -v g="$1" '$1 == p && $2 == g { print $3 }'
}
gone() { for _ in $(seq 1000); do [ -e "/proc/$P" ] || return 0; sleep 0.01; done; return 1; }

case_partial() {
	start CUDA_VISIBLE_DEVICES=0 "$BIN/gpu_workload" --gib "$GIB"
	local c; c=$(field counter)
	"$KC" dump -D "$W/img" "$P" || return 1
	gone
	"$KC" restore --gpu-map "$G0=$G1" "$W/img" || return 1
	apps
	probe
	check "$c" && nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader | grep -q "^$P, $G1" &&
		echo "partial: OK, moved from GPU 0 to GPU 1 with --gpu-map G0=G1 alone"
	local rc=$?
	kill -9 "$P"
	return $rc
}

case_both() {
	# the workload puts 1/3 of its VRAM on GPU 0 and 2/3 on GPU 1
	start "$BIN/gpu_workload" --gib "$GIB" --devices all
	[ "$(field devices)" = 2 ] && [ "$(mem "$G0")" -lt "$(mem "$G1")" ] || return 1
	local c; c=$(field counter)
	"$KC" dump -D "$W/img" "$P" || return 1
	gone
	"$KC" restore "$W/img" || return 1
	apps
	probe
	check "$c" || return 1
	echo "both: restored in place OK"
	c=$(field counter)
	"$KC" dump -D "$W/img2" "$P" || return 1
	gone
	"$KC" restore --gpu-map "$G0=$G1" "$W/img2" || return 1
	apps
	probe
	echo "MiB on GPU 0: $(mem "$G0"), on GPU 1: $(mem "$G1")"
	check "$c" && [ "$(mem "$G0")" -gt "$(mem "$G1")" ] && echo "both: restored with GPUs swapped OK"
	local rc=$?
	kill -9 "$P"
	return $rc
}

for c in $CASES; do
	echo "== $c"
	"case_$c" || { echo "multigpu $c: FAILED"; kill -9 "${P:-0}" 2>/dev/null; }
done
