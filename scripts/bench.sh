#!/usr/bin/env bash
# Runs every benchmark of the project (not part of the test command) and prints one table:
# each figure, its same-run baseline and the ratio, with the date, machine and commit.
# Every benchmark prints its own readable report (kept in out/bench/<name>.log) plus
# machine-readable lines "BENCH<TAB>figure<TAB>value<TAB>baseline<TAB>ratio" that this collects.
#
#   scripts/bench.sh [NAME...]     names: engine analysis service tokenizer viewer (default: all)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${ATTNSCOPE_BUILD_DIR:-$repo/build}
out=$repo/out/bench
mkdir -p "$out"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(engine analysis service tokenizer viewer)

declare -A target=([engine]=engine_bench [analysis]=analysis_bench [service]=service_bench
                   [tokenizer]=tokenizer_bench [viewer]=attnscope)
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
for name in "${names[@]}"; do
  cmake --build "$build" -j"$(nproc)" --target "${target[$name]}"
done

table=$out/table.tsv
: >"$table"
for name in "${names[@]}"; do
  binary=$(find "$build" -name "${target[$name]}" -type f -perm -u+x | head -n 1)
  echo "== $name: $binary" >&2
  extra=()
  # The engine benchmark writes a Qwen2-0.5B-shaped checkpoint; the analysis benchmark reuses it.
  if [ "$name" = analysis ] && [ -f /tmp/attnscope-qwen2-0.5b-shaped/model.safetensors ]; then
    extra=(--model /tmp/attnscope-qwen2-0.5b-shaped)
  fi
  if [ "$name" = tokenizer ] && [ -d "$repo/tests/bench/tokenizer_js_peer" ] &&
     [ ! -d "$repo/tests/bench/tokenizer_js_peer/node_modules" ]; then
    (cd "$repo/tests/bench/tokenizer_js_peer" && npm ci --silent) || true
  fi
  # The viewer benchmark is a node script driving chromium over pages the attnscope binary writes.
  if [ "$name" = viewer ]; then
    (cd "$repo" && ATTNSCOPE_BUILD_DIR="$build" node client/viewer/bench/viewer_bench.mjs) 2>&1 |
      tee "$out/$name.log" >&2 || true
  else
    (cd "$repo" && "$binary" "${extra[@]}") 2>&1 | tee "$out/$name.log" >&2 || true
  fi
  grep -P '^BENCH\t' "$out/$name.log" | sed "s/^BENCH\t/$name\t/" >>"$table" || true
done

echo
echo "attnscope benchmarks, $(date -u +%Y-%m-%d), $(nproc) cores $(uname -m), commit $(git -C "$repo" rev-parse --short HEAD)"
printf '| %-10s | %-52s | %14s | %14s | %7s |\n' bench figure value baseline ratio
printf '|%s|%s|%s|%s|%s|\n' ------------ ------------------------------------------------------ \
  ---------------- ---------------- ---------
while IFS=$'\t' read -r bench figure value baseline ratio; do
  printf '| %-10s | %-52s | %14s | %14s | %7s |\n' "$bench" "$figure" "$value" "$baseline" "$ratio"
done <"$table"
