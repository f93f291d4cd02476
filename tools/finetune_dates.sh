#!/usr/bin/env bash
# The README's fine-tuning example: the real Gemma 3 270M learns to rewrite English dates in ISO
# 8601 (examples/finetune-dates/job.yaml). Fetches and converts the model as tools/main_job.sh
# does, writes the task's data (tools/make_date_task.py: 800 training and 100 held-out dates)
# into build/finetune-dates/, and trains; the held-out exact match is printed before training
# and at every evaluation. --lora trains LoRA adapters instead (examples/finetune-dates/lora.yaml);
# other arguments go to `gemmapod train` (e.g. --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/models build/finetune-dates
gguf=$(tools/fetch_gemma3_270m.sh)
model=build/models/gemma3-270m-bf16.h5
if [[ ! -f $model || $model -ot $gguf || $model -ot $gemmapod ]]; then
  "$gemmapod" convert "$gguf" "$model" --dtype bf16 --force
fi
python3 tools/make_date_task.py build/finetune-dates
job=examples/finetune-dates/job.yaml
if [[ ${1:-} == --lora ]]; then
  job=examples/finetune-dates/lora.yaml
  shift
fi
exec "$gemmapod" train --config "$job" "$@"
