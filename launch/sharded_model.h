// A sharded run of a decoder-only Gemma checkpoint, in two steps. PlanShardedGemma decides the
// layout without communicating: the pod file (or, without one, every rank of the job in one
// tensor-parallel group), the stage layers, and the checks that refuse a layout that cannot work
// (divisibility, stages, memory). LoadShardedGemma then builds the process grid and reads only
// this rank's slices of the weights from the file.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/gemma/model_config.h"
#include "models/layers/kv_cache.h"
#include "serving/engine/pipeline_engine.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"
#include "sharding/stage_plan.h"

namespace gemmapod {

struct ModelFiles;

// The model config stored in a checkpoint and the bytes per element of its matrices.
struct CheckpointModel {
  ModelConfig config;
  int64_t matrix_bytes = 2;
};
CheckpointModel ReadCheckpointModel(const std::string& path);

struct ShardedGemmaPlan {
  std::optional<PodTopology> pod;  // absent: one tensor-parallel group of every rank
  int world_size = 1;
  ModelConfig config;
  std::vector<LayerRange> stages;
  int64_t max_sequences = 1;  // per replica
  int64_t max_context = 1;
  int64_t sampled_vocab = 0;
  // The KV cache as a shared pool of blocks (block_tokens > 0) or fixed slots (0).
  KvPool kv_pool{0, {0, 0}, 0};
};

// The pod file at `pod_path`, parsed once per command; none when the path is empty.
std::optional<PodTopology> LoadPodIfGiven(const std::string& pod_path);

// `pod`: the job's pod file, or none (every rank in one tensor-parallel group). Throws
// gemmapod::Error naming the pod file, the model and every reason the layout fails.
ShardedGemmaPlan PlanShardedGemma(int world_size, std::optional<PodTopology> pod,
                                  const ModelFiles& files, int64_t max_sequences,
                                  int64_t max_context, int64_t sampled_vocab);

// A loaded sharded model of any family: this rank's place in the grid and its pipeline engine.
// A loaded model on this rank, as `serve` and `generate` drive it: a process grid and the
// pipeline engine over it (Gemma, RecurrentGemma), or an engine a family's own pipeline owns
// (T5Gemma's, whose encoder ranks sit outside the engine).
struct ShardedRun {
  std::unique_ptr<ProcessGrid> grid;
  std::unique_ptr<PipelineEngine> pipeline;
  // Without a grid: what owns the engine, the engine (null on a rank outside it), its stage's
  // tensor-parallel group, the layout's name, and what a rank outside the engine does instead.
  std::shared_ptr<void> owner;
  PipelineEngine* engine = nullptr;
  Communicator* stage_tp = nullptr;
  std::string layout;
  std::function<void()> serve_outside_engine;
};

// A line for rank 0 to print when the pod's devices are accelerators, which this build does not
// compute on yet (so that host figures never pass for GPU ones); empty for CPU pods or no pod.
std::string HostComputeNotice(const PodTopology* pod);

// Collective over `world`.
ShardedRun LoadShardedGemma(Communicator& world, const ShardedGemmaPlan& plan,
                            const ModelFiles& files);

}  // namespace gemmapod
