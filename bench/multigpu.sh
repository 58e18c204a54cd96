#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a machine with two GPUs: a process dumped on GPU 0 and restored onto
# GPU 1 with --gpu-map, its VRAM verified after.
#   bench/multigpu.sh BUNDLE.tar.gz BIN_DIR [GIB]
set -euo pipefail
BUNDLE=$1 BIN=$(cd "$2" && pwd) GIB=${3:-2}
mkdir -p /opt/kc && tar -xzf "$BUNDLE" -C /opt/kc
B=$(ls -d /opt/kc/kcheckpoint-*)
export KCHECKPOINT_CRIU=$B/bin/criu
KC=$B/bin/kcheckpoint
W=/var/tmp/kc-mg
rm -rf "$W" && mkdir -p "$W"
G0=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | sed -n 1p)
G1=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | sed -n 2p)
echo "gpu0 $G0 gpu1 $G1"
field() { tr ' ' '\n' <"$W/st" | sed -n "s/^$1=//p"; }
probe() {
	local old; old=$(cat "$W/st"); kill -USR1 "$P"
	for _ in $(seq 600); do [ "$(cat "$W/st")" != "$old" ] && return; sleep 0.05; done
	echo "no answer" >&2; exit 1
}
setsid -f env CUDA_VISIBLE_DEVICES=0 "$BIN/gpu_workload" --gib "$GIB" --status "$W/st" </dev/null >"$W/log" 2>&1
for _ in $(seq 600); do [ -s "$W/st" ] && break; sleep 0.1; done
P=$(field pid)
probe; echo "before: $(cat "$W/st")"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader
"$KC" dump -D "$W/img" "$P"
"$KC" inspect "$W/img" | sed -n '/^PID/,/^$/p'
"$KC" restore --gpu-map "$G0=$G1" "$W/img"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader
probe; echo "after: $(cat "$W/st")"
[ "$(field mismatches)" = 0 ] && echo "multigpu: OK, moved from GPU 0 to GPU 1"
kill -9 "$P"
