#!/usr/bin/env bash
# Everything a lent GPU machine can check, in one command (sized for 8 minutes of an H200):
#
#   scripts/gpu-check.sh OUTDIR                  on the GPU machine (CUDA, PyTorch 2.x with
#                                                transformers, no gRPC, no internet)
#   scripts/gpu-check.sh --cpu [--build-dir B] OUTDIR   the same steps on the CPU with the tiny
#                                                models (CI runs this as a CTest test)
#   scripts/gpu-check.sh --prepare               here, before a device run: downloads the C++
#                                                dependencies the GPU image lacks (Debian's apt)
#                                                into .gpu-deps/ (git-ignored: name it in the
#                                                device tool's `carry`)
#
# Steps, each recorded in OUTDIR/steps.tsv (pass, FAIL or "not run" with the reason):
#  1. configure with -DATTNSCOPE_WITH_GRPC=OFF against PyTorch's libtorch (GPU) or Debian's
#     (--cpu, unless --build-dir names a configured build) and build the engine, the command
#     line, the engine tests and the engine benchmark;
#  2. the golden tests on the device in float32 (within 1e-4 of the dumps of transformers),
#     and the tensor-reduction and wire-dtype tests there;
#  3. bf16 on the device against transformers' eager Qwen2 in bf16 on the same device
#     (bounds and why: scripts/gpu_check.py); --cpu: not run, transformers is not installed;
#  4. random Qwen2-0.5B- and Qwen2-7B-shaped bf16 checkpoints built on the device (never
#     shipped) and the engine benchmark on each (prefill at 512 and 2048 tokens, decode with
#     capture off and every layer captured, AnalyzeHeads against plain generation, the decode
#     roofline, peak device memory) beside transformers' eager generate(output_attentions=True)
#     on the same GPU, checkpoint and prompt; --cpu: the tiny model, no transformers;
#  5. OUTDIR/results.json (every figure) and OUTDIR/table.md (printed).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=gpu
build=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu ;;
    --build-dir) build=$2; shift ;;
    --prepare) mode=prepare ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    -*) echo "gpu-check.sh: unknown flag '$1'" >&2; exit 2 ;;
    *) out=$1 ;;
  esac
  shift
done

# The C++ packages the build needs beyond libtorch, as Debian 12 names them (runtime and
# development halves), for a machine without them and without a network.
deps=(libabsl-dev libabsl20220623 nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev
      libfmt9 libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libgtest-dev libgmock-dev
      pkgconf pkgconf-bin libpkgconf3)
if [ "$mode" = prepare ]; then
  mkdir -p "$repo/.gpu-deps"
  (cd "$repo/.gpu-deps" && apt-get download "${deps[@]}")
  du -sh "$repo/.gpu-deps"
  exit 0
fi
[ -n "$out" ] || { echo "usage: scripts/gpu-check.sh [--cpu] [--build-dir DIR] OUTDIR" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
: >"$out/steps.tsv"
rm -f "$out"/*.json "$out/table.md"
work=$(mktemp -d /tmp/attnscope-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$mode" = gpu ]; then
  python=python3
  device=cuda
  run_dtype=bfloat16
  prompts=512,2048
  decode=32
  shapes=(0.5b 7b)
  jobs=$(nproc)
else
  python=/usr/bin/python3
  device=cpu
  run_dtype=float32
  prompts=64,256
  decode=8
  shapes=(tiny)
  jobs=1
fi

# record NAME STATUS SECONDS NOTE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$out/steps.tsv"; }
# step NAME COMMAND...: runs it with its output in OUTDIR/NAME.log, records pass or FAIL.
step() {
  local name=$1; shift
  local start=$SECONDS
  echo "== $name: $*" >&2
  if "$@" >"$out/$name.log" 2>&1; then
    record "$name" pass $((SECONDS - start)) ""
  else
    record "$name" FAIL $((SECONDS - start)) "see $name.log"
    tail -n 30 "$out/$name.log" >&2
  fi
}

golden=$repo/tests/data/golden  # the dumps of transformers, in the repository
if [ "$mode" = gpu ] && [ -d "$repo/.gpu-deps" ]; then
  # Carried Debian packages, unpacked beside the build (never into /).
  for deb in "$repo"/.gpu-deps/*.deb; do dpkg -x "$deb" "$work/deps"; done
  export PATH=$work/deps/usr/bin:$PATH
  export PKG_CONFIG_PATH=$work/deps/usr/lib/x86_64-linux-gnu/pkgconfig:$work/deps/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$work/deps  # the .pc files say prefix=/usr
  export LD_LIBRARY_PATH=$work/deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  deps_prefix=$work/deps/usr
fi

configure() {
  local prefix=()
  if [ "$mode" = gpu ]; then
    local torch_prefix
    torch_prefix=$($python -c 'import torch; print(torch.utils.cmake_prefix_path)')
    prefix=("-DCMAKE_PREFIX_PATH=$torch_prefix${deps_prefix:+;$deps_prefix}"
            -DTORCH_CUDA_ARCH_LIST=9.0 -DCMAKE_CUDA_ARCHITECTURES=90)
  fi
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DATTNSCOPE_WITH_GRPC=OFF "${prefix[@]}"
}
if [ -z "$build" ]; then
  build=$repo/build-gpu-check-$mode
fi
if [ "$mode" = gpu ] || [ ! -f "$build/CMakeCache.txt" ]; then
  step configure configure
fi
step build cmake --build "$build" -j"$jobs" --target attnscope engine_test engine_bench
cli=$build/client/cpp/attnscope
bench=$build/tests/engine/engine_bench

# 2. golden float32 tests on the device (1e-4), and the device data path's own tests.
step golden-float32 env ATTNSCOPE_TEST_DEVICE=$device "$build/tests/engine/engine_test" \
  '--gtest_filter=Models/GoldenTest.*:Models/EngineAnalysisTest.*:TensorReductionsTest.*' \
  --gtest_output=json:"$out/golden-float32.json"

# 3. bf16 against transformers on the same device.
if $python -c 'import transformers' 2>/dev/null; then
  step golden-bf16 $python "$repo/scripts/gpu_check.py" golden-bf16 --cli "$cli" \
    --golden "$golden" --device $device --work "$work" --out "$out/golden-bf16.json"
else
  record golden-bf16 "not run" 0 "transformers is not installed for $python"
fi

# 4. checkpoints and the engine benchmark.
$python "$repo/scripts/gpu_check.py" prompt --length "${prompts##*,}" --seed 3 \
  --vocab "$([ "$mode" = gpu ] && echo 150000 || echo 250)" --out "$work/prompt.ids"
for shape in "${shapes[@]}"; do
  dir=$work/qwen2-$shape
  if [ "$shape" = tiny ]; then
    step "checkpoint-$shape" "$cli" make-tiny-model "$dir" --no-tokenizer
    record "hf-$shape" "not run" 0 "transformers is not installed for $python"
  else
    # Built on the device by transformers itself; its eager generate is timed in the same go.
    step "hf-$shape" $python "$repo/scripts/gpu_check.py" hf-bench --shape "$shape" --dir "$dir" \
      --device $device --prompt-file "$work/prompt.ids" --prompt-length "${prompts%%,*}" \
      --decode $decode --out "$out/hf-$shape.json"
  fi
  step "engine-$shape" "$bench" --dir "$dir" --device $device --dtype $run_dtype \
    --prompts $prompts --decode $decode --prompt-file "$work/prompt.ids" --label "$shape" \
    --json "$out/engine-$shape.json"
  rm -rf "$dir"  # 15 GB for the 7B shape: never left behind
done

# 5. one JSON and one table; the per-step logs and documents go into one archive beside them
# (the device tool returns at most 8 files).
status=0
$python "$repo/scripts/gpu_check.py" report --out "$out" --mode $mode || status=$?
(cd "$out" && find . -maxdepth 1 -type f \( -name '*.log' -o -name '*.json' \) \
   ! -name results.json -printf '%P\n' | tar -czf details.tar.gz -T - &&
 find . -maxdepth 1 -type f \( -name '*.log' -o -name '*.json' \) ! -name results.json -delete)
exit $status
