#!/bin/bash
# Distributed fine-tuning on one host: tokens/s and each rank's peak memory of `gemmapod train`
# with the real Gemma 3 270M (f32) on one rank, 2 data-parallel replicas, tp 2, 2 replicas with
# ZeRO-1 and 2 pipeline stages (1F1B), ROUNDS times in turn (docs/performance.md, "Distributed
# fine-tuning").
#   [LAYOUTS="one tp2 ..."] bench/distributed_training_bench.sh [MODEL.h5] [ROUNDS]
# MODEL defaults to build/gemma3-270m/f32.h5 (tools/fetch_gemma3_270m.sh or the README's main job
# writes it); LAYOUTS to all of one, dp2, tp2, zero2 and pp2 (a model too large for two replicas on
# this host leaves dp2 out); dp2sync is dp2 with the gradient sums after the backward instead of
# overlapped with it. Runs in a scratch directory; prints the progress line of the last
# step, the memory the trainer planned per rank, and each rank's peak resident memory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
model=$(realpath "${1:-$repo/build/gemma3-270m/f32.h5}")
rounds=${2:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_rmaps_base_oversubscribe=1
gemmapod=$repo/build/gemmapod
python3 - <<'PY'
import random
random.seed(1)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there").split()
with open("data.jsonl", "w") as f:
    for _ in range(64):
        f.write('{"text": "%s"}\n' % " ".join(random.choice(words) for _ in range(40)))
PY
job() {  # name, extra top-level keys, extra optimizer keys
  printf 'model: %s\ndata: {train: data.jsonl, max_length: 128, packing: true}\nsteps: 4\n' "$model" > "$1.yaml"
  printf 'batch: {sequences: 4, micro_batch: 1}\noptimizer: {lr: 1e-5%s}\n' "$3" >> "$1.yaml"
  printf 'checkpoint: {dir: run-%s}\n%s\n' "$1" "$2" >> "$1.yaml"
}
run() {  # name, ranks
  local cmd=(/usr/bin/time -f "rank peak resident memory: %M KB" "$gemmapod" train --config "$1.yaml")
  [ "$2" -gt 1 ] && cmd=(mpirun -np "$2" "${cmd[@]}")
  echo "== $1 ($2 rank(s))"
  "${cmd[@]}" 2>&1 | grep -E "step 4/4 \| (loss|saved)|train: memory|peak resident" | sed 's/(.*trainable parameters)//'
  rm -rf "run-$1"
}
job one "" ""
job dp2 "" ""
job tp2 "parallel: {tp: 2}" ""
job zero2 "" ", zero: 1"
job pp2 "parallel: {pp: 2}" ""
job dp2sync "parallel: {overlap: false}" ""
layouts=${LAYOUTS:-one dp2 tp2 zero2 pp2}
for _ in $(seq "$rounds"); do
  for layout in $layouts; do
    if [ "$layout" = one ]; then run one 1; else run "$layout" 2; fi
  done
done
