#!/usr/bin/env bash
# Builds attnscope and runs every test: the clang-format check, the C++ suites (GoogleTest
# through CTest, including the real-server integration tests on loopback), the Python and Node
# client tests, the deploy checks, and a bounded libFuzzer run of each fuzz target under
# ASan+UBSan. At the end it lists every skipped test (ctest, GTEST_SKIP, pytest, node) and the
# time of each phase.
#
#   scripts/test.sh                 (what CI runs; FUZZ_SECONDS=30 per target by default)
#   FUZZ_SECONDS=0 scripts/test.sh  (skip the fuzzing step)
#   CI=true scripts/test.sh         (a skip fails the run unless tests/allowed-skips.txt lists
#                                    it: only tests that need hardware CI lacks, i.e. CUDA)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

phase_names=()
phase_seconds=()
report_phases() {
  local status=$?
  if [ ${#phase_names[@]} -gt 0 ]; then
    echo "test.sh phase times:"
    local total=0 i
    for i in "${!phase_names[@]}"; do
      awk -v n="${phase_names[$i]}" -v ms="${phase_seconds[$i]}" 'BEGIN { printf "  %-10s %7.1f s\n", n, ms / 1000 }'
      total=$((total + phase_seconds[i]))
    done
    awk -v ms="$total" 'BEGIN { printf "  %-10s %7.1f s\n", "total", ms / 1000 }'
  fi
  exit $status
}
trap report_phases EXIT

# phase NAME COMMAND...: runs COMMAND and records its wall time under NAME.
phase() {
  local name=$1 start status=0
  shift
  start=$(date +%s%3N)
  "$@" || status=$?
  phase_names+=("$name")
  phase_seconds+=($(($(date +%s%3N) - start)))
  return $status
}

phase deps scripts/install-deps.sh
phase format scripts/check-format.sh
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
export CCACHE_BASEDIR="$repo"
build=${ATTNSCOPE_BUILD_DIR:-$repo/build}
phase configure cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
phase build cmake --build "$build" -j"$(nproc)"

# Tests start their own servers on ephemeral loopback ports, so they may run in parallel.
ctest_status=0
phase ctest ctest --test-dir "$build" --output-on-failure -j2 --timeout 600 || ctest_status=$?
ci_flag=()
if [ "${CI:-}" = "true" ]; then ci_flag=(--ci); fi
skips_status=0
/usr/bin/python3 scripts/report-skips.py "$build/Testing/Temporary/LastTest.log" \
  --allowed tests/allowed-skips.txt "${ci_flag[@]}" || skips_status=$?
if [ "$ctest_status" -ne 0 ]; then exit "$ctest_status"; fi
if [ "$skips_status" -ne 0 ]; then exit "$skips_status"; fi

fuzz_seconds=${FUZZ_SECONDS:-30}
if [ "$fuzz_seconds" -gt 0 ]; then
  export FUZZ_SEED=${FUZZ_SEED:-1}
  phase fuzz scripts/run-fuzz.sh "$fuzz_seconds"
fi
