#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up everything (apt, CRIU, builds) and runs every test: cmocka unit
# tests and pytest integration tests against real CRIU and a real containerd,
# in an ASan/UBSan build; the release build is compiled with -Werror too.
# The last line is ctest's summary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" >/dev/null
BUILD=$("$ROOT/scripts/setup.sh" --tests --sanitize --build-dir "$ROOT/build-asan" | tail -n 1)
. "$BUILD/criu.env"
export KCHECKPOINT_CRIU
# leaks are checked in the unit tests; CRIU tests fork and exec a lot
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
exec ctest --output-on-failure --timeout 1200 "$@"
