#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What was run on the lent GPU machine for docs/PERFORMANCE.md: unpacks the
# bundle (scripts/bundle.sh) and runs bench/gpu_bench.sh in several shapes.
#   bench/device-suite.sh BUNDLE.tar.gz BIN_DIR [RUN...]
# RUN: warm, small, pair, big, bigmf, biglike, cold, coldpf, thp, kcthp, kcthpmf, archive,
# bigar (archive, BIG GiB), bigarcold (the same, page cache dropped before restore),
# bignohuge / bigarnohuge (big / bigar restored with --no-fill-huge),
# bignooverlap (big restored with --no-fill-overlap: the fill first), bigserial (big with
# KCHECKPOINT_FILL_SERIAL=1: the fill through the userfaultfd, then the GPU restore),
# bigopt=OPT (big restored with kcheckpoint option OPT, e.g. bigopt=--fill-threads=9)
# (default: small pair big cold thp archive).  warm touches 2.5x the big
# size of memory once (a file in a tmpfs, then unmounted): this VM backs its
# memory on first touch, which otherwise slows whichever flow runs first.
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
	warm)
		t0=$(date +%s.%N)
		mkdir -p /var/tmp/kc-warm && mount -t tmpfs -o size=$((BIG * 3))G tmpfs /var/tmp/kc-warm &&
			head -c "$((BIG * 5 / 2))G" /dev/zero >/var/tmp/kc-warm/fill; umount /var/tmp/kc-warm
		echo "warm: touched $((BIG * 5 / 2)) GiB in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
		;;
	small) "$HERE/gpu_bench.sh" --gib 2 --procs 1 ;;
	pair) "$HERE/gpu_bench.sh" --gib 4 --procs 2 ;;
	big) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 ;;
	cold) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --cold ;;
	coldpf) KCHECKPOINT_PREFETCH=1 "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --cold ;;
	bigmf) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --manual-first ;;
	biglike) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --manual-like-kc ;;
	thp) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --thp always ;;
	kcthp) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --kc-thp always ;;
	kcthpmf) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --kc-thp always --manual-first ;;
	archive) "$HERE/gpu_bench.sh" --gib 8 --procs 1 --archive ;;
	bigar) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --archive ;;
	bignohuge) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --kc-restore-opt --no-fill-huge ;;
	bignooverlap) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --kc-restore-opt --no-fill-overlap ;;
	bigserial) KCHECKPOINT_FILL_SERIAL=1 "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 ;;
	bigopt=*) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --kc-restore-opt "${r#bigopt=}" ;;
	bigarnohuge) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --archive --kc-restore-opt --no-fill-huge ;;
	bigarcold) "$HERE/gpu_bench.sh" --gib "$BIG" --procs 1 --archive --cold ;;
	esac || echo "gpu_bench $r FAILED (exit $?)"
done
