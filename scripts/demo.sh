#!/usr/bin/env bash
# The README's main command: builds attnscope, starts attnscope-server on the model organism
# (config/organism: a small Qwen2 trained by scripts/organism/train.py, whose heads have known
# jobs; see its MODEL_CARD.md) on an ephemeral loopback port, waits until it answers, asks the
# research notebook's questions of it (scripts/organism/study.py: held-out accuracy by batch
# run, label-field heads, increase-vs-decrease heads, induction and previous-token heads, and
# the causal check: ablating the label-field heads against as many random heads, with the
# mean single-head sweep's heatmap), runs
# the attention-head analysis example on one held-out statement, and stops the server.
#
#   scripts/demo.sh [OUT_DIR]        # results, figures, capture.safetensors, analysis.json and
#                                    # the interactive view.html go to OUT_DIR (default out/demo)
#
# Environment: ATTNSCOPE_BUILD_DIR (default build), JOBS (parallel build jobs, default 2),
# ATTNSCOPE_DEMO_MODEL (another Hugging Face folder instead of the organism; the organism study
# is then skipped, since its questions are about the organism's training data).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ATTNSCOPE_BUILD_DIR:-$REPO/build}"
OUT="${1:-$REPO/out/demo}"
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

"$REPO/scripts/install-deps.sh"
if [ ! -f "$BUILD/build.ninja" ] && [ ! -f "$BUILD/Makefile" ]; then
  cmake -S "$REPO" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$BUILD" -j"${JOBS:-2}" --target attnscope attnscope-server

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

MODEL="${ATTNSCOPE_DEMO_MODEL:-$REPO/config/organism}"

PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADDRESS="127.0.0.1:$PORT"
SERVER_ARGS=(--model "$MODEL" --listen "$ADDRESS")
if [ -f "$REPO/config/server.yaml" ]; then SERVER_ARGS=(--config "$REPO/config/server.yaml" "${SERVER_ARGS[@]}"); fi
"$BUILD/server/service/attnscope-server" "${SERVER_ARGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Ready when GetModelInfo answers (the model is loaded and the port is serving).
export PYTHONPATH="$REPO/client/python${PYTHONPATH:+:$PYTHONPATH}"
for _ in $(seq 1 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "demo: attnscope-server exited:" >&2
    cat "$WORK/server.log" >&2
    exit 1
  fi
  if "$PYTHON" -c "import attnscope, sys; attnscope.Client(sys.argv[1], timeout=2).model_info()" "$ADDRESS" 2>/dev/null; then
    break
  fi
  sleep 0.2
done
"$PYTHON" -c "import attnscope, sys; attnscope.Client(sys.argv[1], timeout=2).model_info()" "$ADDRESS" || {
  echo "demo: attnscope-server at $ADDRESS did not become ready; log:" >&2
  cat "$WORK/server.log" >&2
  exit 1
}
echo "demo: attnscope-server ready at $ADDRESS"

EXAMPLE_ARGS=()
if [ -z "${ATTNSCOPE_DEMO_MODEL:-}" ]; then
  # 200 held-out statements (a generator seed never trained on) through `attnscope batch`,
  # then the label-field attention and the induction probe; prints the answers.
  "$PYTHON" "$REPO/scripts/organism/study.py" --server "$ADDRESS" --out "$OUT/organism"
  EXAMPLE_ARGS=(--data "$OUT/organism/heldout_statements.json")
fi
MPLBACKEND=Agg "$PYTHON" "$REPO/client/python/examples/attention_head_analysis.py" \
  --server "$ADDRESS" --out "$OUT" "${EXAMPLE_ARGS[@]}"
echo "demo: figures written to $OUT"

# The interactive viewer of the same capture, with the analysis report's maps: one offline page.
"$BUILD/client/cpp/attnscope" analyze --from "$OUT/capture.safetensors" --json >"$OUT/analysis.json"
"$BUILD/client/cpp/attnscope" view "$OUT/capture.safetensors" --report "$OUT/analysis.json" \
  --out "$OUT/view.html"
echo "demo: open $OUT/view.html in a browser (or: attnscope view $OUT/capture.safetensors --serve)"
