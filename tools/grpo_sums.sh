#!/usr/bin/env bash
# The README's RL example: GRPO teaches the real Gemma 3 270M to add two numbers from 1 to 30
# (examples/grpo-sums/job.yaml), rewarding the exact sum. Fetches and converts the model
# (tools/gemma3_270m_model.sh), writes the prompts (tools/make_sums_task.py --form answers: 800 training
# and 100 held-out) into build/grpo-sums/, and trains; the held-out reward of greedy answers is
# printed before training and at every evaluation. Other arguments go to `gemmapod train`.
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/grpo-sums
tools/gemma3_270m_model.sh >/dev/null  # the job files read build/models/gemma3-270m-bf16.h5
python3 tools/make_sums_task.py build/grpo-sums --form answers --low 1 --high 30
exec "$gemmapod" train --config examples/grpo-sums/job.yaml "$@"
