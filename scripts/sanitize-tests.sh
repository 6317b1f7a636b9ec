#!/usr/bin/env bash
# Builds the whole project with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DATTNSCOPE_SANITIZE=ON) in build-asan and runs its CTest suite there. On demand, not in CI:
# with libtorch this is a full second build (see docs for timings).
#
#   scripts/sanitize-tests.sh                      (everything)
#   scripts/sanitize-tests.sh -L reliability       (extra arguments go to ctest)
#   scripts/sanitize-tests.sh -R service
#
# Environment: ATTNSCOPE_ASAN_BUILD_DIR (default <repo>/build-asan), ASAN_JOBS (build and
# test parallelism, default 2), ASAN_TARGETS (space-separated build targets; default all),
# ASAN_OPTIONS / UBSAN_OPTIONS / LSAN_OPTIONS (defaults below; any report fails the test).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNSCOPE_ASAN_BUILD_DIR:-$repo/build-asan}
jobs=${ASAN_JOBS:-2}

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

start=$(date +%s)
cmake -S "$repo" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATTNSCOPE_SANITIZE=ON -DATTNSCOPE_BUILD_TESTS=ON
targets=()
if [ -n "${ASAN_TARGETS:-}" ]; then
  for target in $ASAN_TARGETS; do targets+=(--target "$target"); done
fi
cmake --build "$build" -j"$jobs" "${targets[@]}"
built=$(date +%s)

# Halt on the first report so a finding fails the test instead of scrolling past.
# Leak checking stays on; libraries outside the project that leak on purpose at exit go into
# scripts/lsan.supp (one `leak:<function or library>` a line), which is used when present.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
if [ -z "${LSAN_OPTIONS:-}" ] && [ -f "$repo/scripts/lsan.supp" ]; then
  export LSAN_OPTIONS="suppressions=$repo/scripts/lsan.supp:print_suppressions=0"
fi

set +e
ctest --test-dir "$build" --output-on-failure -j"$jobs" "$@"
rc=$?
set -e
done_at=$(date +%s)
echo "sanitize-tests: build $((built - start)) s, tests $((done_at - built)) s, ctest exit $rc"
exit $rc
