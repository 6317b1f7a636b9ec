#!/usr/bin/env bash
# Builds attnscope and runs every test: the C++ suites (GoogleTest through CTest, including the
# real-server integration tests on loopback), the Python and Node client tests, the deploy
# checks, and a bounded libFuzzer run of each fuzz target under ASan+UBSan.
#
#   scripts/test.sh                 (what CI runs; FUZZ_SECONDS=30 per target by default)
#   FUZZ_SECONDS=0 scripts/test.sh  (skip the fuzzing step)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

scripts/install-deps.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR="$repo"
build=${ATTNSCOPE_BUILD_DIR:-$repo/build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$(nproc)"

# Tests start their own servers on ephemeral loopback ports, so they may run in parallel.
ctest --test-dir "$build" --output-on-failure -j2 --timeout 600

fuzz_seconds=${FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" -gt 0 ]; then
  FUZZ_SEED=${FUZZ_SEED:-1} scripts/run-fuzz.sh "$fuzz_seconds"
fi
