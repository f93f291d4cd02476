#include "launch/recurrent_commands.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>

#include "launch/model_files.h"
#include "launch/rank_runner.h"
#include "models/recurrent_gemma.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"
#include "serving/recurrent_pipeline.h"
#include "sharding/pod_topology.h"

namespace gemmapod {
namespace {

// The job's grid: the pod's layout, or every rank in one tensor-parallel group. One replica.
struct RecurrentRun {
  RecurrentGemmaConfig config;
  std::optional<ProcessGrid> grid;
  std::optional<RecurrentGemma> stage;
};

// Checks on every rank before any collective, so bad input is reported once.
RecurrentGemmaConfig CheckRecurrentJob(Communicator& world, const ModelFiles& files,
                                       const std::string& pod_path, GridShape& shape) {
  const std::string& model_path = files.model_path;
  ParsePrecision(files);
  const RecurrentGemmaConfig config =
      RecurrentGemmaFromAttributes(Hdf5CheckpointReader::Open(model_path)->config(), model_path);
  shape = GridShape{world.size(), 1, 1};
  if (!pod_path.empty()) {
    const PodTopology pod = LoadPodTopology(pod_path);
    shape = GridShape{pod.tp, pod.pp, pod.dp};
    GEMMAPOD_CHECK(pod.dp == 1, pod_path, ": RecurrentGemma runs one replica for now (dp ", pod.dp,
                   "): give the job tp x pp ranks");
    GEMMAPOD_CHECK(pod.pipeline.automatic, pod_path,
                   ": pipeline.stages: RecurrentGemma splits its layers evenly over the stages "
                   "for now: give 'auto'");
  }
  GEMMAPOD_CHECK(shape.world_size() == world.size(), "the layout tp ", shape.tp, " x pp ", shape.pp,
                 " needs ", shape.world_size(), " ranks, the job has ", world.size());
  if (auto problem = RecurrentTensorParallelProblem(config, shape.tp)) throw Error(*problem);
  GEMMAPOD_CHECK(shape.pp <= config.num_layers, config.name, ": ", shape.pp,
                 " pipeline stages for ", config.num_layers, " layers");
  return config;
}

void LoadRun(Communicator& world, const ModelFiles& files, const GridShape& shape,
             RecurrentRun& run) {
  const std::string& model_path = files.model_path;
  run.grid.emplace(ProcessGrid::Create(world, shape));
  const RecurrentGemmaShard shard = RecurrentGemmaShardAt(run.config, *run.grid);
  run.stage.emplace(
      run.config, shard,
      LoadRecurrentGemmaShard(run.config, shard, *Hdf5CheckpointReader::Open(model_path)),
      &run.grid->tp());
  run.stage->set_matmul_precision(ParsePrecision(files));
}

}  // namespace

bool IsRecurrentGemmaCheckpoint(const std::string& path) {
  try {
    const Attributes a = Hdf5CheckpointReader::Open(path)->config();
    const auto it = a.find("architecture");
    if (it == a.end()) return false;
    const auto* name = std::get_if<std::string>(&it->second);
    return name != nullptr && *name == "recurrent_gemma";
  } catch (const Error&) {
    return false;
  }
}

int GenerateRecurrentOnRanks(const GenerateOptions& o, Communicator& world) {
  std::optional<Tokenizer> tokenizer;
  std::vector<GenerationRequest> requests;
  GridShape shape;
  RecurrentRun run;
  CheckOnEveryRank(world, [&] {
    tokenizer = LoadTokenizer(o.files);
    run.config = CheckRecurrentJob(world, o.files, o.pod_path, shape);
    GEMMAPOD_CHECK(tokenizer->vocab_size() <= run.config.vocab_size, o.files.model_path,
                   ": the tokenizer has ", tokenizer->vocab_size(), " pieces, the model ",
                   run.config.vocab_size);
    for (const std::string& prompt : o.prompts) {
      requests.push_back(BuildGenerationRequest(o, prompt, *tokenizer, run.config.eos_id));
      GEMMAPOD_CHECK(!requests.back().prompt.empty(), "generate: the prompt has no tokens");
      GEMMAPOD_CHECK(o.max_tokens > 0, "generate: --max-tokens must be positive");
      Validate(requests.back().sampling);
    }
  });
  LoadRun(world, o.files, shape, run);
  const int64_t sampled = std::min<int64_t>(run.config.vocab_size, tokenizer->vocab_size());
  using Clock = std::chrono::steady_clock;
  // Every rank holds the same logits and samples the same token from the same seeded stream.
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& request = requests[i];
    if (world.rank() == 0 && requests.size() > 1) std::printf("--- prompt %zu ---\n", i);
    GenerationTracker tracker(*tokenizer, request, [&](std::string_view text) {
      if (world.rank() != 0) return;
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    Sampler sampler(request.sampling);
    RecurrentGemmaState state = run.stage->NewState(1);
    const auto t0 = Clock::now();
    Tensor logits = ForwardOnGrid(*run.stage, *run.grid, {0, request.prompt, {}}, state, false);
    const auto t1 = Clock::now();
    while (true) {
      const int32_t id =
          sampler.Sample({logits.data<float>(), static_cast<size_t>(sampled)}, tracker.context());
      if (!tracker.Accept(id)) break;
      logits = ForwardOnGrid(*run.stage, *run.grid, {0, {id}, {}}, state, false);
    }
    const auto t2 = Clock::now();
    if (world.rank() != 0) continue;
    std::printf("\n");
    std::fflush(stdout);
    if (o.stats) {
      const GenerationResult& r = tracker.result();
      const double decode = std::chrono::duration<double>(t2 - t1).count();
      std::fprintf(stderr,
                   "prompt %zu tokens in %.3f s; generated %zu tokens in %.3f s (%.1f tokens/s); "
                   "finish: %s; decode state %.1f MiB; %s over %d rank(s)\n",
                   request.prompt.size(), std::chrono::duration<double>(t1 - t0).count(),
                   r.tokens.size(), decode, r.tokens.size() / std::max(decode, 1e-9),
                   FinishReasonName(r.finish), state.bytes() / 1048576.0,
                   LayoutName(*run.grid).c_str(), world.size());
    }
  }
  return 0;
}

int LogitsRecurrentOnRanks(const LogitsOptions& o, Communicator& world) {
  std::vector<int32_t> tokens;
  GridShape shape;
  RecurrentRun run;
  CheckOnEveryRank(world, [&] {
    GEMMAPOD_CHECK(o.tokens.size() == 1,
                   "logits: RecurrentGemma scores one --tokens sequence at "
                   "a time, got ",
                   o.tokens.size());
    run.config = CheckRecurrentJob(world, o.files, o.pod_path, shape);
    tokens = ParseTokenList(o.tokens[0]);
    for (size_t i = 0; i < tokens.size(); ++i) {
      GEMMAPOD_CHECK(tokens[i] < run.config.vocab_size, "--tokens: entry ", i, " (", tokens[i],
                     ") is outside the vocabulary of ", run.config.vocab_size);
    }
  });
  LoadRun(world, o.files, shape, run);
  RecurrentGemmaState state = run.stage->NewState(1);
  const Tensor logits = ForwardOnGrid(*run.stage, *run.grid, {0, tokens, {}}, state, true);
  if (world.rank() != 0) return 0;
  WriteNpy(o.out, logits);
  std::printf("wrote %s: f32 %s (%s over %d rank(s))\n", o.out.c_str(),
              ShapeToString(logits.shape()).c_str(), LayoutName(*run.grid).c_str(), world.size());
  return 0;
}

}  // namespace gemmapod
