#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What was run on the lent GPU machine for docs/PERFORMANCE.md: unpacks the
# bundle (scripts/bundle.sh) and runs bench/gpu_bench.sh in several shapes.
#   bench/device-suite.sh BUNDLE.tar.gz BIN_DIR [RUN...]
# RUN: small, pair, big, cold, coldpf, thp, archive (default: all but coldpf)
set -uo pipefail
BUNDLE=$1 BINDIR=$(cd "$2" && pwd)
shift 2
RUNS=${*:-small pair big cold thp archive}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p /opt/kc && tar -xzf "$BUNDLE" -C /opt/kc
B=$(ls -d /opt/kc/kcheckpoint-*)
export PATH=$B/bin:$PATH KCHECKPOINT_CRIU=$B/bin/criu KC=$B/bin/kcheckpoint BIN=$BINDIR
export WORK=${WORK:-/var/tmp/kc-bench} OUT=${OUT:-/var/tmp/kc-bench/out}
BIG=${BIG_GIB:-24}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
uname -r; nproc; free -g | sed -n 2p
"$KC" --version; "$KC" check
for r in $RUNS; do
	case $r in
	small) "$HERE/gpu_bench.sh" --gib 2 --procs 1 ;;
	pair) "$HERE/gpu_bench.sh" --gib 4 --procs 2 ;;
	big) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 ;;
	cold) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --cold ;;
	coldpf) KCHECKPOINT_PREFETCH=1 "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --cold ;;
	bigmf) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --manual-first ;;
	thp) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --thp always ;;
	archive) "$HERE/gpu_bench.sh" --gib 8 --procs 1 --archive ;;
	esac || echo "gpu_bench $r FAILED (exit $?)"
done
