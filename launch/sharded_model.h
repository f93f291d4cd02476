// Loads this rank's part of a decoder-only Gemma checkpoint for a sharded run: the process grid
// from the pod file (or, without one, every rank of the job in one tensor-parallel group), the
// stage layers, the layout checked against the pod's memory, and only this rank's slices of the
// weights read from the file.
#pragma once

#include <memory>
#include <string>

#include "serving/gemma_pipeline.h"
#include "sharding/pod_topology.h"
#include "sharding/process_grid.h"

namespace gemmapod {

struct ModelFiles;

struct ShardedGemma {
  std::unique_ptr<ProcessGrid> grid;
  std::unique_ptr<GemmaPipeline> pipeline;
};

// Collective over `world`. `max_sequences` and `max_context` size the KV cache (per replica).
ShardedGemma LoadShardedGemma(Communicator& world, const std::string& pod_path,
                              const ModelFiles& files, int64_t max_sequences, int64_t max_context,
                              int64_t sampled_vocab);

// The model config stored in a checkpoint and the bytes per element of its matrices.
struct CheckpointModel {
  ModelConfig config;
  int64_t matrix_bytes = 2;
};
CheckpointModel ReadCheckpointModel(const std::string& path);

}  // namespace gemmapod
