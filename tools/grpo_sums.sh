#!/usr/bin/env bash
# The README's RL example: GRPO teaches the real Gemma 3 270M to add two numbers from 1 to 30
# (examples/grpo-sums/job.yaml), rewarding the exact sum. Fetches and converts the model as
# tools/main_job.sh does, writes the prompts (tools/make_sums_task.py --form answers: 800 training
# and 100 held-out) into build/grpo-sums/, and trains; the held-out reward of greedy answers is
# printed before training and at every evaluation. Other arguments go to `gemmapod train`.
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/models build/grpo-sums
gguf=$(tools/fetch_gemma3_270m.sh)
model=build/models/gemma3-270m-bf16.h5
if [[ ! -f $model || $model -ot $gguf || $model -ot $gemmapod ]]; then
  "$gemmapod" convert "$gguf" "$model" --dtype bf16 --force
fi
python3 tools/make_sums_task.py build/grpo-sums --form answers --low 1 --high 30
exec "$gemmapod" train --config examples/grpo-sums/job.yaml "$@"
