#!/usr/bin/env bash
# CTest fixture for the tests on the real Gemma 3 270M: fetches the GGUF once into the cache
# (tools/fetch_gemma3_270m.sh; GEMMAPOD_CACHE) and converts it with the gemmapod under test into
# <dir>/f32.h5, <dir>/bf16.h5 and <dir>/int8.h5.
#   prepare_gemma3_270m.sh <gemmapod binary> <dir>
set -euo pipefail
gemmapod=$1
dir=$2
here=$(cd "$(dirname "$0")/../../.." && pwd)
gguf=$("$here/tools/fetch_gemma3_270m.sh")
mkdir -p "$dir"
ln -sf "$gguf" "$dir/model.gguf"
"$gemmapod" convert "$gguf" "$dir/f32.h5" --dtype f32 --force
"$gemmapod" convert "$gguf" "$dir/bf16.h5" --dtype bf16 --force
"$gemmapod" convert "$gguf" "$dir/int8.h5" --quantize int8 --force
