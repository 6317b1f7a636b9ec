#!/usr/bin/env bash
# The long part of the reliability suite: 16 concurrent clients x 200 mixed requests
# (captures of several sizes, analyses, tokenizations, cancellations, short deadlines)
# against a real attnscope-server on loopback, then the table of outcomes, p50/p99 latency
# and peak RSS. The quick part of the suite runs in CI: `ctest -L reliability`.
#
#   scripts/reliability.sh                    (builds the two binaries in $ATTNSCOPE_BUILD_DIR)
#   RELIABILITY_CLIENTS=8 RELIABILITY_REQUESTS=50 scripts/reliability.sh
#   RELIABILITY_ALL=1 scripts/reliability.sh  (also every other reliability test)
#
# The table is printed and written to $ATTNSCOPE_BUILD_DIR/reliability-load.txt.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNSCOPE_BUILD_DIR:-$repo/build}

if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build" -j"$(nproc)" --target attnscope attnscope-server

export ATTNSCOPE_SERVER_BIN="$build/server/service/attnscope-server"
export ATTNSCOPE_CLI_BIN="$build/client/cpp/attnscope"
export RELIABILITY_CLIENTS=${RELIABILITY_CLIENTS:-16}
export RELIABILITY_REQUESTS=${RELIABILITY_REQUESTS:-200}
export RELIABILITY_REPORT="$build/reliability-load.txt"
export PYTHONDONTWRITEBYTECODE=1

tests=("$repo/tests/reliability/test_load.py")
if [ "${RELIABILITY_ALL:-0}" = 1 ]; then
  tests=("$repo/tests/reliability")
fi
cd "$repo/tests/reliability"
/usr/bin/python3 -m pytest -q -rxs -s -p no:cacheprovider "${tests[@]}"
echo "table written to $RELIABILITY_REPORT"
