#!/usr/bin/env bash
# The README's preference-tuning example: DPO teaches the real Gemma 3 270M to prefer the right sum
# of two two-digit numbers over a plausible wrong one (examples/dpo-sums/job.yaml). Fetches and
# converts the model (tools/gemma3_270m_model.sh), writes the pairs (tools/make_sums_task.py
# --form pairs: 800 training and 100 held-out) into build/dpo-sums/, and trains; the held-out preference and
# ranking accuracies are printed before training and at every evaluation. --reward trains a reward
# model on the same pairs instead (examples/reward-sums/job.yaml). Other arguments go to
# `gemmapod train` (e.g. --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/dpo-sums
tools/gemma3_270m_model.sh >/dev/null  # the job files read build/models/gemma3-270m-bf16.h5
python3 tools/make_sums_task.py build/dpo-sums --form pairs
job=examples/dpo-sums/job.yaml
if [[ ${1:-} == --reward ]]; then
  job=examples/reward-sums/job.yaml
  shift
fi
exec "$gemmapod" train --config "$job" "$@"
