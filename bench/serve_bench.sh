#!/usr/bin/env bash
# Serves a model with `gemmapod serve` at each precision and loads it with build/bench/serve_bench
# at 1, 4, 16 and 64 concurrent clients (prompts of 128 tokens, 128 generated, greedy).
#
#   bench/serve_bench.sh [model.h5]      default: the real Gemma 3 270M, build/gemma3-270m/bf16.h5
#
# Extra settings through the environment: PRECISIONS ("exact fast"), CLIENTS ("1,4,16,64"),
# PROMPT (128), OUTPUT (128), SHARED (0: prompt tokens every request shares), PARALLEL (64
# sequence slots), PORT (18090), SERVE_ARGS (more `gemmapod serve` flags, e.g.
# --no-prefix-caching).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-build/gemma3-270m/bf16.h5}
PORT=${PORT:-18090}
[ -f "$MODEL" ] || { echo "serve_bench.sh: $MODEL is missing (tools/main_job.sh fetches the 270M)" >&2; exit 1; }
for precision in ${PRECISIONS:-exact fast}; do
  log=$(mktemp)
  build/gemmapod serve --model "$MODEL" --port "$PORT" --parallel "${PARALLEL:-64}" \
    --context 1024 --precision "$precision" ${SERVE_ARGS:-} 2> "$log" &
  server=$!
  for _ in $(seq 1 300); do
    grep -q "serve: ready" "$log" && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  echo "== $MODEL, precision $precision: $(grep 'serve: ready' "$log" | sed 's/^serve: ready: //')"
  build/bench/serve_bench --port "$PORT" --clients "${CLIENTS:-1,4,16,64}" \
    --prompt-tokens "${PROMPT:-128}" --output-tokens "${OUTPUT:-128}" --vocab 262144 \
    --shared-prefix-tokens "${SHARED:-0}"
  kill -TERM "$server"
  wait "$server"
  rm -f "$log"
done
