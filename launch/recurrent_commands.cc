#include "launch/recurrent_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <optional>

#include "launch/engine_commands.h"
#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "launch/serve_engine.h"
#include "models/recurrent_gemma/recurrent_gemma.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/engine/recurrent_stage_model.h"
#include "sharding/pod_topology.h"
#include "sharding/recurrent_gemma_layout.h"

namespace gemmapod {
namespace {

// Checks on every rank before any collective, so bad input is reported once.
RecurrentGemmaConfig CheckRecurrentJob(Communicator& world, const ModelFiles& files,
                                       const std::string& pod_path, GridShape& shape) {
  const std::string& model_path = files.model_path;
  ParsePrecision(files);
  const RecurrentGemmaConfig config =
      RecurrentGemmaFromAttributes(CheckpointFile(model_path).config(), model_path);
  shape = GridShape{world.size(), 1, 1};
  if (!pod_path.empty()) {
    const PodTopology pod = LoadPodTopology(pod_path);
    shape = GridShape{pod.tp, pod.pp, pod.dp};
    GEMMAPOD_CHECK(pod.pipeline.automatic, pod_path,
                   ": pipeline.stages: RecurrentGemma splits its layers evenly over the stages "
                   "for now: give 'auto'");
  }
  GEMMAPOD_CHECK(shape.world_size() == world.size(), "the layout tp ", shape.tp, " x pp ", shape.pp,
                 " x dp ", shape.dp, " needs ", shape.world_size(), " ranks, the job has ",
                 world.size());
  if (auto problem = RecurrentTensorParallelProblem(config, shape.tp)) throw Error(*problem);
  GEMMAPOD_CHECK(shape.pp <= config.num_layers, config.name, ": ", shape.pp,
                 " pipeline stages for ", config.num_layers, " layers");
  return config;
}

// Collective over `world`: this rank's shard of the layout, in an engine whose state holds
// `sequences` sequences (this replica's share).
ShardedRun LoadRecurrentRun(Communicator& world, const ModelFiles& files, const GridShape& shape,
                            const RecurrentGemmaConfig& config, int64_t sequences,
                            int64_t sampled_vocab) {
  ShardedRun run;
  run.grid = std::make_unique<ProcessGrid>(ProcessGrid::Create(world, shape));
  const RecurrentGemmaShard shard = RecurrentGemmaShardAt(config, *run.grid);
  RecurrentGemma model(config, shard,
                       LoadRecurrentGemmaShard(config, shard, CheckpointFile(files.model_path)),
                       &run.grid->tp());
  model.set_matmul_precision(ParsePrecision(files));
  run.pipeline = std::make_unique<PipelineEngine>(
      *run.grid, MakeRecurrentStageModel(std::move(model), std::max<int64_t>(sequences, 1)),
      PipelineOptions{sampled_vocab});
  return run;
}

int64_t PerReplica(size_t count, int dp) { return (static_cast<int64_t>(count) + dp - 1) / dp; }

}  // namespace

int GenerateRecurrentOnRanks(const GenerateOptions& o, Communicator& world) {
  std::optional<Tokenizer> tokenizer;
  std::vector<GenerationRequest> requests;
  GridShape shape;
  RecurrentGemmaConfig config;
  CheckOnEveryRank(world, [&] {
    tokenizer = LoadTokenizer(o.files);
    config = CheckRecurrentJob(world, o.files, o.pod_path, shape);
    GEMMAPOD_CHECK(tokenizer->vocab_size() <= config.vocab_size, o.files.model_path,
                   ": the tokenizer has ", tokenizer->vocab_size(), " pieces, the model ",
                   config.vocab_size);
    for (const std::string& prompt : o.prompts) {
      requests.push_back(BuildGenerationRequest(o, prompt, *tokenizer, config.eos_id));
      GEMMAPOD_CHECK(!requests.back().prompt.empty(), "generate: the prompt has no tokens");
      GEMMAPOD_CHECK(o.max_tokens > 0, "generate: --max-tokens must be positive");
      Validate(requests.back().sampling);
    }
  });
  const int64_t sampled = std::min<int64_t>(config.vocab_size, tokenizer->vocab_size());
  ShardedRun run = LoadRecurrentRun(world, o.files, shape, config,
                                    PerReplica(requests.size(), shape.dp), sampled);
  return GenerateOnEngine(o, world, *tokenizer, requests, run);
}

int LogitsRecurrentOnRanks(const LogitsOptions& o, Communicator& world) {
  std::vector<std::vector<int32_t>> sequences;
  GridShape shape;
  RecurrentGemmaConfig config;
  CheckOnEveryRank(world, [&] {
    config = CheckRecurrentJob(world, o.files, o.pod_path, shape);
    // A fixed state: no context limit from the model.
    sequences = ParseTokenBatch(o.tokens, config.vocab_size, std::numeric_limits<int64_t>::max());
  });
  ShardedRun run = LoadRecurrentRun(world, o.files, shape, config,
                                    PerReplica(sequences.size(), shape.dp), config.vocab_size);
  return LogitsOnEngine(o, world, sequences, run);
}

int ServeRecurrentOnRanks(const ServeOptions& o, Communicator& world) {
  GridShape shape;
  RecurrentGemmaConfig config;
  int64_t sampled = 0;
  return ServeOnRanks(
      o, world,
      [&](ServePlan& plan) {
        RefuseKvPoolFlags(o, "RecurrentGemma");
        plan.tokenizer = LoadTokenizer(o.files);
        config = CheckRecurrentJob(world, o.files, o.pod_path, shape);
        GEMMAPOD_CHECK(plan.tokenizer->vocab_size() <= config.vocab_size, o.files.model_path,
                       ": the tokenizer has ", plan.tokenizer->vocab_size(), " pieces, the model ",
                       config.vocab_size);
        // A fixed-size state per sequence: the context is a per-request bound, not memory.
        plan.model.context = o.context;
        plan.model.eos_id = config.eos_id;
        sampled = std::min<int64_t>(config.vocab_size, plan.tokenizer->vocab_size());
        plan.model.sampled_vocab = sampled;
      },
      [&] { return LoadRecurrentRun(world, o.files, shape, config, o.parallel, sampled); });
}

}  // namespace gemmapod
