// Sharded decode benchmark: tokens/s of a published Gemma shape with random weights (each rank
// makes only its own shard) over a tp x pp grid of this job's ranks, next to the bandwidth
// roofline of the whole job. Run it once per layout and compare, e.g. tp = 1 against tp = 2:
//
//   OMP_NUM_THREADS=1 build/bench/sharded_decode_bench --config configs/models/gemma2-2b.yaml
//   OMP_NUM_THREADS=1 mpirun -np 2 build/bench/sharded_decode_bench --tp 2 --config ...
//
// or a real checkpoint (each rank reads its slices), e.g. Gemma 3 270M in bf16 or int8:
//
//   OMP_NUM_THREADS=1 mpirun -np 2 build/bench/sharded_decode_bench --model gemma3-270m-int8.h5
//
// Flags: --config, --dtype bf16|f32 (random weights), --model M.h5 (instead), --tp N (default:
// the job's ranks), --pp N, --prompt 128, --decode 32, --batch 1. Prints a markdown row for
// docs/performance.md on rank 0.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/gemma_shard.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/error.h"
#include "serving/engine/gemma_stage_model.h"
#include "serving/engine/pipeline_engine.h"
#include "sharding/gemma_layout.h"

namespace gemmapod {
namespace {

using bench::Now;

int Main(int argc, char** argv, Communicator& world) {
  const bench::Flags flags(argc, argv,
                           {{"--config", "configs/models/gemma2-2b.yaml"},
                            {"--dtype", "bf16"},
                            {"--model", ""},
                            {"--tp", std::to_string(world.size())},
                            {"--pp", "1"},
                            {"--prompt", "128"},
                            {"--decode", "32"},
                            {"--batch", "1"}});
  const std::string config_path = flags.Get("--config"), model_path = flags.Get("--model");
  std::string dtype = flags.Get("--dtype");
  const int tp = static_cast<int>(flags.Int("--tp")), pp = static_cast<int>(flags.Int("--pp"));
  const int64_t prompt = flags.Int("--prompt"), decode = flags.Int("--decode"),
                batch = flags.Int("--batch");
  GEMMAPOD_CHECK(world.size() % (tp * pp) == 0, "sharded_decode_bench: ", world.size(),
                 " ranks do not hold tp ", tp, " x pp ", pp);
  std::unique_ptr<Hdf5CheckpointReader> checkpoint;
  ModelConfig config;
  DType weight_dtype = DType::kBF16;
  if (model_path.empty()) {
    config = LoadModelConfigYaml(config_path);
    weight_dtype = ParseDType(dtype);
  } else {
    checkpoint = Hdf5CheckpointReader::Open(model_path);
    config = FromAttributes(checkpoint->config(), model_path);
    weight_dtype = checkpoint->Info("model.embed_tokens.weight").dtype;
    dtype = std::string(DTypeName(weight_dtype));
  }
  ProcessGrid grid = ProcessGrid::Create(world, GridShape{tp, pp, world.size() / (tp * pp)});
  const std::vector<LayerRange> stages =
      GemmaStageLayers(config, tp, pp, static_cast<int64_t>(DTypeSize(weight_dtype)), nullptr);
  const GemmaShard shard = GemmaShardAt(config, grid.shape(), grid.coords(), stages);
  const double t_init = Now();
  GemmaStage stage(config, shard,
                   checkpoint ? LoadGemmaShard(config, shard, *checkpoint, &grid.tp())
                              : RandomGemmaShard(config, shard, weight_dtype, 1),
                   &grid.tp());
  if (world.rank() == 0) {
    std::fprintf(stderr, "sharded_decode_bench: %s, %s, tp=%d pp=%d; shard built in %.1f s\n",
                 config.name.c_str(), dtype.c_str(), tp, pp, Now() - t_init);
  }
  // Every rank measures the bandwidth at once: together they are the job's share of the machine.
  world.Barrier();
  Tensor triad = Tensor::Empty({1}, DType::kF32);
  triad.data<float>()[0] = static_cast<float>(bench::TriadGBs());
  world.AllReduce(triad, ReduceOp::kSum);
  PipelineEngine pipeline(
      grid, MakeGemmaStageModel(grid, std::move(stage), batch, prompt + 2 * decode + 2), {});

  std::vector<SequenceChunk> prompts;
  for (int64_t s = 0; s < batch; ++s) {
    prompts.push_back({s, bench::PromptTokens(prompt, s, config.vocab_size)});
  }
  double decode_seconds = 0, prefill_seconds = 0;
  if (!pipeline.is_driver()) {
    pipeline.Serve();
  } else {
    // Greedy decode: each sequence's next step waits for its previous token, as a user's stream
    // does. The batch is cut into up to pp micro-batches kept in flight (a group's next step is
    // submitted as soon as its tokens return), so every stage has work. A first round of one step
    // warms the buffers up and is not timed.
    const int64_t groups = std::min<int64_t>(batch, pp);
    for (int round = 0; round < 2; ++round) {
      const int64_t steps = round == 0 ? 1 : decode;
      for (int64_t s = 0; s < batch; ++s) pipeline.Reset(s);
      const double t0 = Now();
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<SequenceChunk> part;
        for (int64_t s = g; s < batch; s += groups) part.push_back(prompts[static_cast<size_t>(s)]);
        pipeline.Submit(StageOutput::kSample, part);
      }
      std::vector<std::vector<int32_t>> tokens;
      for (int64_t g = 0; g < groups; ++g) tokens.push_back(pipeline.TakeTokens());
      const double t1 = Now();
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<SequenceChunk> step;
        for (int64_t s = g, k = 0; s < batch; s += groups, ++k) {
          step.push_back({s, {tokens[static_cast<size_t>(g)][static_cast<size_t>(k)]}});
        }
        pipeline.Submit(StageOutput::kSample, step);
      }
      for (int64_t i = 0; i < steps; ++i) {
        for (int64_t g = 0; g < groups; ++g) {
          const std::vector<int32_t> next = pipeline.TakeTokens();
          if (i + 1 == steps) continue;
          std::vector<SequenceChunk> step;
          for (int64_t s = g, k = 0; s < batch; s += groups, ++k) {
            step.push_back({s, {next[static_cast<size_t>(k)]}});
          }
          pipeline.Submit(StageOutput::kSample, step);
        }
      }
      prefill_seconds = t1 - t0;
      decode_seconds = (Now() - t1) / static_cast<double>(steps);
    }
    pipeline.Finish();
  }
  if (world.rank() != 0) return 0;
  // Per token the job reads every weight once (the ranks their slices, at the same time), int8
  // row scales included.
  const double weight_bytes = static_cast<double>(GemmaShardWeightBytes(
      config, WholeGemma(config), static_cast<int64_t>(DTypeSize(weight_dtype))));
  const double bandwidth = triad.data<float>()[0];
  const double roofline_ms = weight_bytes / (bandwidth * 1e9) * 1e3;
  std::printf(
      "| model | weights | ranks | layout | batch | prefill tokens/s | decode ms/step | decode "
      "tokens/s | roofline ms/step (weights / triad %.1f GB/s) | of roofline |\n",
      bandwidth);
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf(
      "| %s | %s, %.2f GB | %d | tp=%d pp=%d | %lld | %.1f | %.1f | %.2f | %.1f | %.0f %% |\n",
      config.name.c_str(), dtype.c_str(), weight_bytes / 1e9, world.size(), tp, pp,
      static_cast<long long>(batch), static_cast<double>(batch * prompt) / prefill_seconds,
      decode_seconds * 1e3, static_cast<double>(batch) / decode_seconds, roofline_ms,
      100.0 * roofline_ms / (decode_seconds * 1e3));
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) {
  gemmapod::MpiSession session(&argc, &argv);
  auto world = gemmapod::MpiCommunicator::World();
  try {
    return gemmapod::Main(argc, argv, *world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sharded_decode_bench: rank %d: %s\n", world->rank(), e.what());
    gemmapod::MpiSession::Abort(1);
  }
}
