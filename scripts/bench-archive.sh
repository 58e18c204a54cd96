#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# Archive speed, next to `tar | zstd -T1` on the same data in the same run.
# Prints figures; asserts nothing.
#
#   scripts/bench-archive.sh [--size MIB] [--layout several|one|both]
#                            [--compress zstd[:N]] [--threads N] [--runs N] [--dir DIR]
#
# The bench binary is $KC_ARCHIVE_BENCH or <build>/bench/archive_bench with
# <build> from $KC_BUILD_DIR (default ./build).  Everything is written under
# --dir (default: a fresh dir in /var/tmp), removed at the end.  The page
# cache is warm for both sides, as after a real dump (CRIU just wrote the
# images); `sync` runs between steps so write-back of one step does not
# land in the next one's time.
set -euo pipefail

size=4096
layouts=both
compress=zstd
threads=0
runs=1
dir=
while [ $# -gt 0 ]; do
	case "$1" in
	--size) size=$2; shift 2 ;;
	--layout) layouts=$2; shift 2 ;;
	--compress) compress=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--dir) dir=$2; shift 2 ;;
	-h|--help) sed -n '4,16p' "$0"; exit 0 ;;
	*) echo "bench-archive: unknown option '$1'" >&2; exit 2 ;;
	esac
done

bench=${KC_ARCHIVE_BENCH:-${KC_BUILD_DIR:-build}/bench/archive_bench}
[ -x "$bench" ] || { echo "bench-archive: '$bench' not found: build first or set KC_ARCHIVE_BENCH" >&2; exit 1; }
for tool in tar zstd; do
	command -v $tool >/dev/null || { echo "bench-archive: '$tool' not found" >&2; exit 1; }
done
case "$compress" in
zstd) level=1 ;;
zstd:*) level=${compress#zstd:} ;;
none) level= ;;
*) echo "bench-archive: bad --compress '$compress'" >&2; exit 2 ;;
esac
[ "$layouts" = both ] && layouts="several one"

own_dir=
if [ -z "$dir" ]; then
	dir=$(mktemp -d /var/tmp/kc-bench.XXXXXX)
	own_dir=1
fi
cleanup() { rm -rf "$dir/img" "$dir/out" "$dir/base" "$dir"/a.tar* "$dir"/b.tar*; [ -n "$own_dir" ] && rmdir "$dir" 2>/dev/null; true; }
trap cleanup EXIT

now() { date +%s.%N; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }

echo "host: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "zstd $(zstd -V | grep -o 'v[0-9.]*'), $(tar --version | head -1), kcheckpoint --compress $compress, threads ${threads/#0/all}"
printf '%-8s %-9s %-8s %-22s %-22s %s\n' layout size step kcheckpoint "tar|zstd -T1${level:+ -$level}" speedup
# On a VM whose memory grows as it is touched, the first run pays for that:
# --runs 2 shows it.
for layout in $(for _ in $(seq "$runs"); do echo $layouts; done); do
	rm -rf "$dir/img" "$dir/out" "$dir/base" "$dir"/a.tar* "$dir"/b.tar*
	"$bench" gen "$dir/img" "$size" "$layout" >/dev/null
	sync

	read -r _ bin aout asec agbps arss < <("$bench" archive "$dir/img" "$dir/a.tar.zst" "$compress" "$threads")
	sync
	read -r _ _ _ usec ugbps urss < <("$bench" unpack "$dir/a.tar.zst" "$dir/out")
	sync
	cmp -s "$dir/img/pages-1.img" "$dir/out/pages-1.img" || { echo "bench-archive: round trip differs" >&2; exit 1; }

	t0=$(now)
	if [ -n "$level" ]; then
		tar -C "$dir/img" -cf - . | zstd -q -T1 -"$level" -o "$dir/b.tar.zst"
	else
		tar -C "$dir/img" -cf "$dir/b.tar.zst" .
	fi
	t1=$(now)
	sync
	mkdir "$dir/base"
	t2=$(now)
	if [ -n "$level" ]; then
		zstd -q -d -T1 -c "$dir/b.tar.zst" | tar -C "$dir/base" -xf -
	else
		tar -C "$dir/base" -xf "$dir/b.tar.zst"
	fi
	t3=$(now)
	sync
	bout=$(stat -c %s "$dir/b.tar.zst")
	bsec=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	bxsec=$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')
	bgbps=$(gbps "$bin" "$bsec")
	bxgbps=$(gbps "$bin" "$bxsec")
	sz=$(awk -v b="$bin" 'BEGIN { printf "%.2f GB", b / 1e9 }')
	printf '%-8s %-9s %-8s %-22s %-22s %s\n' "$layout" "$sz" archive \
		"$agbps GB/s ($(printf %.2f "$asec") s)" "$bgbps GB/s ($(printf %.2f "$bsec") s)" \
		"$(awk -v a="$agbps" -v b="$bgbps" 'BEGIN { printf "%.1fx", a / b }')"
	printf '%-8s %-9s %-8s %-22s %-22s %s\n' "$layout" "$sz" unpack \
		"$ugbps GB/s ($(printf %.2f "$usec") s)" "$bxgbps GB/s ($(printf %.2f "$bxsec") s)" \
		"$(awk -v a="$ugbps" -v b="$bxgbps" 'BEGIN { printf "%.1fx", a / b }')"
	printf '%-8s ratio %.3f (tar|zstd %.3f), peak RSS archive %s MB, unpack %s MB\n' "$layout" \
		"$(awk -v o="$aout" -v i="$bin" 'BEGIN { print o / i }')" \
		"$(awk -v o="$bout" -v i="$bin" 'BEGIN { print o / i }')" "$arss" "$urss"
done
