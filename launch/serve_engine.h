// `gemmapod serve` on every rank, for any family whose model runs on the pipeline engine: rank 0
// answers HTTP and schedules; the first stage's other tensor-parallel ranks follow its engine
// calls; later stages serve the pipeline. A family supplies its checks (on every rank, before any
// collective) and its loader.
#pragma once

#include <functional>
#include <optional>

#include "launch/commands.h"
#include "launch/sharded_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "serving/server/openai_server.h"

namespace gemmapod {

class Communicator;

// What a family's checks settle before loading.
struct ServePlan {
  std::optional<Tokenizer> tokenizer;
  ServedModel model;
  // The rank that answers HTTP and drives the engine (the first stage's first rank): rank 0 but
  // for T5Gemma split into encoder and decoder stages, whose first decoder rank drives.
  int leader_rank = 0;
};

// `check` runs on every rank and fills the plan (or throws, reported once); `load` is collective.
int ServeOnRanks(const ServeOptions& options, Communicator& world,
                 const std::function<void(ServePlan&)>& check,
                 const std::function<ShardedRun()>& load);

// A family whose state is fixed slots (RecurrentGemma, T5Gemma's decoder) refuses the KV pool's
// flags by name rather than ignoring them.
void RefuseKvPoolFlags(const ServeOptions& options, const std::string& family);

// The served model's name: --model-name, else the checkpoint's file name without its extension.
std::string ServedModelName(const ServeOptions& options);

}  // namespace gemmapod
