#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A GPU process dumped on one machine and restored on another (the GPU
# UUIDs the image records are absent there, so kcheckpoint maps them).
#
#   bench/xnode.sh dump    BUNDLE.tar.gz BIN_DIR OUT_DIR [GIB]
#   bench/xnode.sh restore BUNDLE.tar.gz BIN_DIR IN_DIR
#
# dump: starts gpu_workload under /var/tmp/kc-x with a pid near pid_max (so
# it is free on the other machine), dumps it into an archive, and leaves in
# OUT_DIR the archive (in 15 MiB parts), the workload's log file (CRIU wants
# the open file back at its size) and the status before the dump.
# restore: puts the files back, restores with the automatic GPU mapping and
# verifies VRAM and counter; then kills it and restores the same archive
# again with --gpu-map OLD=<last GPU> and verifies again.
set -euo pipefail
MODE=$1 BUNDLE=$2 BIN=$(cd "$3" && pwd) DIR=$4 GIB=${5:-0.01}
mkdir -p /opt/kc && tar -xzf "$BUNDLE" -C /opt/kc
B=$(ls -d /opt/kc/kcheckpoint-*)
export KCHECKPOINT_CRIU=$B/bin/criu
KC=$B/bin/kcheckpoint
W=/var/tmp/kc-x
field() { tr ' ' '\n' <"$W/st" | sed -n "s/^$1=//p"; }
probe() { # SIGUSR1: the workload checks all its VRAM and rewrites st
	local old; old=$(cat "$W/st")
	kill -USR1 "$1"
	for _ in $(seq 600); do [ "$(cat "$W/st")" != "$old" ] && break; sleep 0.05; done
	cat "$W/st"
	grep -q "mismatches=0 " "$W/st"
}
gpus() { nvidia-smi --query-gpu=index,uuid --format=csv,noheader; }
apps() { nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader; }
uname -r; gpus
case $MODE in
dump)
	rm -rf "$W" && mkdir -p "$W" "$DIR"
	cp "$BIN/gpu_workload" "$W/"
	max=$(cat /proc/sys/kernel/pid_max)
	echo $((max - 3000)) >/proc/sys/kernel/ns_last_pid
	(cd "$W" && setsid -f "$W/gpu_workload" --gib "$GIB" --status "$W/st" </dev/null >"$W/log" 2>&1)
	for _ in $(seq 600); do [ -s "$W/st" ] && break; sleep 0.1; done
	P=$(field pid)
	probe "$P"
	apps
	"$KC" dump -o "$W/img.tar.zst" "$P"
	ls -l "$W/img.tar.zst"
	split -b 15M -d "$W/img.tar.zst" "$DIR/img.tar.zst.part"
	cp "$W/log" "$DIR/log"
	cp "$W/st" "$DIR/st"
	ls -l "$DIR"
	;;
restore)
	rm -rf "$W" && mkdir -p "$W"
	cp "$BIN/gpu_workload" "$W/"
	cp "$DIR/log" "$W/log"
	cp "$DIR/st" "$W/st"
	cat "$DIR"/img.tar.zst.part* >"$W/img.tar.zst"
	P=$(field pid) C0=$(field counter)
	"$KC" inspect "$W/img.tar.zst"
	echo "== restore, automatic GPU mapping"
	"$KC" restore --work-dir /var/tmp "$W/img.tar.zst"
	apps
	probe "$P"
	[ "$(field counter)" -ge "$C0" ]
	echo "xnode: automatic mapping OK"
	kill -9 "$P"
	for _ in $(seq 1000); do [ -e "/proc/$P" ] || break; sleep 0.01; done
	OLD=$("$KC" inspect --json "$W/img.tar.zst" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["processes"][0]["gpus"][0])' 2>/dev/null || true)
	LAST=$(gpus | tail -1 | cut -d' ' -f2)
	if [ -n "$OLD" ]; then
		echo "== restore, --gpu-map $OLD=$LAST"
		"$KC" restore --work-dir /var/tmp --gpu-map "$OLD=$LAST" "$W/img.tar.zst"
		apps
		probe "$P"
		echo "xnode: --gpu-map OK"
		kill -9 "$P"
	fi
	;;
*) echo "xnode: unknown mode '$MODE'" >&2; exit 2 ;;
esac
