// The calls a server's scheduler makes on the pipeline's first stage. Every tensor-parallel rank
// of that stage must make the same engine calls in the same order (they embed, run their slice of
// the layers and sample together), but only one of them, the leader, hears the HTTP clients. So
// the leader sends each call to the stage's other ranks before making it, and they Follow():
// the one place where a single-process decision becomes a collective one.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "serving/engine/chunk_wire.h"
#include "serving/engine/pipeline_engine.h"

namespace gemmapod {

class Communicator;

class EngineDriver {
 public:
  // `stage_tp`: the first stage's tensor-parallel group; its rank 0 leads. Null: no mirroring, for
  // a group of one, or where every rank of the group runs the same deterministic schedule itself
  // (the CLI's generate, whose requests every rank knows).
  EngineDriver(PipelineEngine& engine, Communicator* stage_tp);

  bool leads() const;
  // One process runs the whole engine: a failed call leaves no other rank half-way, so the
  // scheduler can fail the affected requests and go on serving.
  bool alone() const;
  int stages() const;
  int64_t max_sequences() const;
  int64_t max_context() const;
  // The model's KV pool, when its cache is one (StageModel::kv_pool).
  KvPool kv_pool() const;

  // --- The leader ---
  void Reset(int64_t sequence);
  // One micro-batch: each chunk's sampling settings and whether its token is wanted. True when
  // a result comes back for it (some chunk wants its token); false when none does (pieces of
  // prompts only), and nothing is to be taken.
  bool Submit(std::span<const WireChunk> chunks);
  // The oldest micro-batch's tokens (-1 where not wanted), with log-probabilities where asked.
  std::vector<SampledToken> TakeSamples();
  // No more work: the followers and the pipeline's other stages return.
  void Finish();

  // --- The first stage's other ranks ---
  void Follow();

 private:
  enum Op : int32_t { kReset = 1, kSubmit = 2, kTake = 3, kFinish = 4 };
  void SendToFollowers(Op op, int64_t count, std::vector<int32_t> words);

  PipelineEngine& engine_;
  Communicator* tp_;
};

}  // namespace gemmapod
