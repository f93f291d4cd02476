#!/bin/bash
# The pipeline bubble of `gemmapod train` against the schedule's theory, (p - 1) / (m + p - 1):
# two stages (2 ranks, one core each) over m = 1..8 micro-batches a step, 1F1B and GPipe, on a
# random Gemma 2 of 8 equal layers (d 512, MLP 2048) with the fixtures' 512-word vocabulary, so the stages'
# work is the layers' and splits evenly (docs/performance.md, "Pipeline bubble").
#   bench/pipeline_bubble_bench.sh [STEPS]
# Each run trains STEPS (default 4) steps of m rows of 128 packed tokens, micro-batches of one
# row; the bubble of a step is 1 - (the stages' time in forwards and backwards) / (stages x the
# step's pipeline time), which the trainer writes as pipeline_bubble in metrics.jsonl. Prints
# the median over the steps after the first, and the step time.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
steps=${1:-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_rmaps_base_oversubscribe=1
gemmapod=$repo/build/gemmapod
cat > model.yaml <<'YAML'
name: bubble-gemma2
architecture: gemma2
vocab_size: 512
hidden_size: 512
num_layers: 8
num_heads: 8
num_kv_heads: 4
head_dim: 64
intermediate_size: 2048
query_pre_attn_scalar: 64
attn_logit_softcap: 50.0
final_logit_softcap: 30.0
sliding_window: 4096
post_norms: true
max_position_embeddings: 4096
YAML
"$gemmapod" random-checkpoint --dtype f32 --config model.yaml \
  --tokenizer "$repo/tests/fixtures/models/gemma2/tokenizer.model" --out model.h5 > /dev/null
python3 - <<'PY'
import random
random.seed(1)
with open("data.jsonl", "w") as f:
    for _ in range(512):
        f.write('{"text": "%s"}\n' % " ".join(str(random.randrange(1000)) for _ in range(24)))
PY
printf '%-6s %3s %9s %9s %9s\n' schedule m measured theory step_s
for schedule in 1f1b gpipe; do
  for m in 1 2 3 4 5 6 7 8; do
    cat > job.yaml <<YAML
model: model.h5
data: {train: data.jsonl, max_length: 128, packing: true}
steps: $steps
batch: {sequences: $m, micro_batch: 1}
optimizer: {lr: 1e-5}
parallel: {pp: 2, schedule: $schedule}
checkpoint: {dir: run-$schedule-$m}
YAML
    mpirun -np 2 "$gemmapod" train --config job.yaml > /dev/null 2>&1
    python3 - "$schedule" "$m" "run-$schedule-$m/metrics.jsonl" <<'PY'
import json, statistics, sys
schedule, m, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path) if '"pipeline_bubble"' in l]
rows = rows[1:] or rows
times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])] or [rows[0]["elapsed_s"]]
print("%-6s %3d %9.3f %9.3f %9.2f" % (schedule, m,
      statistics.median(r["pipeline_bubble"] for r in rows), 1 / (m + 1), statistics.median(times)))
PY
  done
done
