#!/usr/bin/env bash
# The README's fine-tuning example: the real Gemma 3 270M learns to rewrite English dates in ISO
# 8601 (examples/finetune-dates/job.yaml). Fetches and converts the model
# (tools/gemma3_270m_model.sh), writes the task's data (tools/make_date_task.py: 800 training and 100 held-out dates)
# into build/finetune-dates/, and trains; the held-out exact match is printed before training
# and at every evaluation. --lora trains LoRA adapters instead (examples/finetune-dates/lora.yaml);
# other arguments go to `gemmapod train` (e.g. --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/finetune-dates
tools/gemma3_270m_model.sh >/dev/null  # the job files read build/models/gemma3-270m-bf16.h5
python3 tools/make_date_task.py build/finetune-dates
job=examples/finetune-dates/job.yaml
if [[ ${1:-} == --lora ]]; then
  job=examples/finetune-dates/lora.yaml
  shift
fi
exec "$gemmapod" train --config "$job" "$@"
