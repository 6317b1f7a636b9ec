#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, no libtorch needed) in build-fuzz and runs
# each one for a bounded time on its corpus in tests/fuzz/corpus/<target>/.
#
#   scripts/run-fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#   scripts/run-fuzz.sh 30                                    (CI)
#   scripts/run-fuzz.sh 600 safetensors_header_fuzz           (one target, longer)
#
# Environment: ATTNSCOPE_FUZZ_BUILD_DIR (default <repo>/build-fuzz), FUZZ_MAX_LEN (default
# 65536 bytes), FUZZ_JOBS (build parallelism, default 2), FUZZ_RSS_LIMIT_MB (default 2048).
#
# New interesting inputs found during the run go to build-fuzz/fuzz-out/<target>/corpus (the
# checked-in corpus is only read). On a crash, leak, timeout or sanitizer report the input is
# saved as build-fuzz/fuzz-out/<target>/crash-* (or leak-*/timeout-*), the script goes on with
# the other targets and exits 1 at the end. To reproduce: build-fuzz/.../<target> <file>.
# To keep the input as a regression test, copy it into tests/fuzz/corpus/<target>/: the
# fuzz_corpus_<target> CTest test of the fuzz build replays the corpus.
set -euo pipefail

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "run-fuzz: SECONDS_PER_TARGET must be a positive integer, got '$seconds'" >&2
  exit 2
fi
shift || true
wanted=("$@")

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNSCOPE_FUZZ_BUILD_DIR:-$repo/build-fuzz}
max_len=${FUZZ_MAX_LEN:-65536}
jobs=${FUZZ_JOBS:-2}
rss_limit=${FUZZ_RSS_LIMIT_MB:-2048}

if ! command -v clang++ >/dev/null; then
  echo "run-fuzz: clang++ not found (libFuzzer needs clang; see scripts/install-deps.sh)" >&2
  exit 2
fi

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
# The standalone fuzz project (tests/fuzz/CMakeLists.txt) instruments everything it builds for
# coverage and the sanitizers and pulls in only the torch-free libraries it fuzzes.
mkdir -p "$build"
cmake -S "$repo/tests/fuzz" -B "$build" "${generator[@]}" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  echo "run-fuzz: configure failed" >&2
  exit 2
}
# Only the requested targets (a name that is not a target fails the build, listing them).
if [ ${#wanted[@]} -gt 0 ]; then
  cmake --build "$build" -j"$jobs" --target "${wanted[@]}"
else
  cmake --build "$build" -j"$jobs" --target fuzz_targets
fi

list="$build/fuzz_targets.txt"
if [ ! -s "$list" ] || ! grep -q . "$list"; then
  echo "run-fuzz: no fuzz targets were configured (see $build/configure.log)" >&2
  exit 2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
ran=0
while IFS=$'\t' read -r name binary; do
  [ -n "$name" ] || continue
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then continue; fi
  out="$build/fuzz-out/$name"
  mkdir -p "$out/corpus"
  seeds="$repo/tests/fuzz/corpus/$name"
  corpus_dirs=("$out/corpus")
  if [ -d "$seeds" ]; then corpus_dirs+=("$seeds"); fi
  dict="$repo/tests/fuzz/corpus/$name.dict"
  dict_flag=()
  if [ -f "$dict" ]; then dict_flag=(-dict="$dict"); fi
  # FUZZ_SEED fixes libFuzzer's mutation sequence (the test command sets it, so CI explores the
  # same inputs each run); unset, every run explores anew.
  if [ -n "${FUZZ_SEED:-}" ]; then dict_flag+=(-seed="$FUZZ_SEED"); fi
  echo "run-fuzz: $name for ${seconds}s (max_len $max_len)"
  set +e
  # The first corpus directory receives new inputs; the checked-in seeds are only read.
  "$binary" "${corpus_dirs[@]}" "${dict_flag[@]}" \
    -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_limit" -timeout=10 \
    -artifact_prefix="$out/" -print_final_stats=1 >"$out/log.txt" 2>&1
  rc=$?
  set -e
  ran=$((ran + 1))
  grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$out/log.txt" |
    sed "s/^/run-fuzz:   /" || true
  if [ $rc -ne 0 ]; then
    echo "run-fuzz: $name FAILED (exit $rc); log: $out/log.txt" >&2
    grep -E 'ERROR|SUMMARY|Test unit written|runtime error' "$out/log.txt" | head -20 >&2 || true
    failed+=("$name")
  fi
done <"$list"

if [ $ran -eq 0 ]; then
  echo "run-fuzz: none of the requested targets exist: ${wanted[*]}" >&2
  exit 2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-fuzz: ${#failed[@]} of $ran targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "run-fuzz: all $ran targets ran ${seconds}s without a finding"
