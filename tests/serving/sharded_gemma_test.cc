// Every tensor/pipeline/data-parallel layout of up to four ranks against the same model on one
// rank, for Gemma 1 (MQA, a vocabulary that does not split evenly), Gemma 2 (GQA, soft-caps,
// sliding window) and Gemma 3 (qk-norm, one key/value head, a global layer): the logits of a
// batched prefill and of decode steps, and greedy generation. Weights come from an HDF5 file that
// each rank reads only its slices of. Run under mpiexec with 4 ranks; a layout smaller than the
// world runs on its first ranks.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/gemma/model_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"
#include "serving/engine/gemma_stage_model.h"
#include "serving/engine/generate.h"
#include "serving/engine/pipeline_engine.h"
#include "sharding/gemma_layout.h"

namespace gemmapod {
namespace {

constexpr double kTolerance = 1e-5;  // max |sharded - one rank| / max |one rank|

ModelConfig TestConfig(const std::string& name) {
  ModelConfig c = LoadModelConfigYaml("configs/models/" + name + ".yaml");
  if (c.architecture == Architecture::kGemma) {
    // Four layers so that pp = 4 has one per stage; 509 ids so that tp = 2 and 4 pad the last
    // shard of the vocabulary.
    c.num_layers = 4;
    c.vocab_size = 509;
    c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  }
  Validate(c, name);
  return c;
}

struct Layout {
  int tp, pp, dp;
};

std::vector<Layout> LayoutsUpTo(int world) {
  std::vector<Layout> out;
  for (int dp : {1, 2}) {
    for (int pp : {1, 2, 4}) {
      for (int tp : {1, 2, 4}) {
        if (tp * pp * dp <= world) out.push_back({tp, pp, dp});
      }
    }
  }
  return out;
}

// Every rank gets rank 0's string.
std::string Broadcast(Communicator& world, std::string text) {
  Tensor size = Tensor::Empty({1}, DType::kI32);
  size.data<int32_t>()[0] = static_cast<int32_t>(text.size());
  world.Broadcast(size, 0);
  text.resize(static_cast<size_t>(size.data<int32_t>()[0]));
  Tensor bytes = Tensor::Borrow(text.data(), {static_cast<int64_t>(text.size())}, DType::kI8);
  world.Broadcast(bytes, 0);
  return text;
}

// Largest |a - b| and |b| over a [rows, V] block of `got` against `want`.
void Compare(const float* got, const float* want, int64_t n, double& diff, double& scale) {
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
  }
}

// A model config name and the dtype its matrices are stored in.
class ShardedGemmaTest : public testing::TestWithParam<std::pair<std::string, DType>> {};

TEST_P(ShardedGemmaTest, EveryLayoutMatchesOneRank) {
  auto world = MpiCommunicator::World();
  const std::string name = GetParam().first;
  // kI8: random f32 weights quantized as `convert --quantize int8` stores them.
  const bool int8 = GetParam().second == DType::kI8;
  ModelConfig config = TestConfig(name);
  const int64_t V = config.vocab_size;
  const Tokenizer tokenizer = Tokenizer::FromFile("tests/fixtures/tokenizer/tiny_gemma.model");
  const int64_t sampled_vocab = std::min<int64_t>(V, tokenizer.vocab_size());

  // One checkpoint for the job, written by rank 0.
  std::string dir;
  if (world->rank() == 0) {
    char tmpl[] = "/tmp/gemmapod-sharded-XXXXXX";
    dir = mkdtemp(tmpl);
    GemmaWeights w = RandomGemmaWeights(config, int8 ? DType::kF32 : GetParam().second, 7);
    const ModelConfig stored = int8 ? QuantizeGemmaWeightsInt8(config, w) : config;
    SaveGemmaCheckpoint(dir + "/model.h5", stored, w, std::nullopt);
  }
  if (int8) config.quantization = WeightQuantization::kInt8;
  dir = Broadcast(*world, dir);
  const std::string path = dir + "/model.h5";

  // The one-rank reference, computed by every rank.
  GemmaDecoder reference = LoadGemmaCheckpoint(path);
  const std::vector<int64_t> lengths = {11, 5, 8};
  constexpr int kDecodeSteps = 3, kGenerated = 6;
  uint32_t lcg = 12345;
  auto next_token = [&] {
    lcg = lcg * 1664525u + 1013904223u;
    return static_cast<int32_t>((lcg >> 8) % static_cast<uint32_t>(sampled_vocab));
  };
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t n : lengths) {
    prompts.emplace_back();
    for (int64_t i = 0; i < n; ++i) prompts.back().push_back(next_token());
  }
  std::vector<std::vector<int32_t>> steps(kDecodeSteps);
  for (auto& s : steps) {
    for (size_t i = 0; i < prompts.size(); ++i) s.push_back(next_token());
  }
  std::vector<Tensor> want_prefill, want_generated_logits;
  std::vector<std::vector<Tensor>> want_decode(prompts.size());
  std::vector<std::vector<int32_t>> want_tokens, want_sampled;
  const SamplingParams greedy;
  SamplingParams sampled;
  sampled.temperature = 0.9f;
  sampled.top_k = 40;
  sampled.top_p = 0.95f;
  sampled.min_p = 0.02f;
  sampled.repetition_penalty = 1.15f;
  sampled.seed = 0x500000003ull;  // the high word matters too
  for (size_t i = 0; i < prompts.size(); ++i) {
    KvCache cache(config, 1, 64);
    want_prefill.push_back(
        reference.Forward({{SequenceChunk{0, prompts[i]}}}, cache, LogitRows::kAllTokens));
    for (int s = 0; s < kDecodeSteps; ++s) {
      want_decode[i].push_back(
          reference.Forward({{SequenceChunk{0, {steps[s][i]}}}}, cache, LogitRows::kLastToken));
    }
    GenerationRequest request;
    request.prompt = prompts[i];
    request.max_new_tokens = kGenerated;
    want_tokens.push_back(Generate(reference, tokenizer, request, [](std::string_view) {}).tokens);
    request.sampling = sampled;
    request.sampling.seed += i;
    want_sampled.push_back(Generate(reference, tokenizer, request, [](std::string_view) {}).tokens);
  }
  const int64_t whole_bytes = GemmaShardWeightBytes(config, WholeGemma(config), 4);

  for (const Layout& layout : LayoutsUpTo(world->size())) {
    const int size = layout.tp * layout.pp * layout.dp;
    std::unique_ptr<Communicator> group = world->Split(world->rank() < size ? 0 : 1, world->rank());
    if (world->rank() >= size) continue;
    SCOPED_TRACE(testing::Message() << name << " " << DTypeName(GetParam().second) << " tp="
                                    << layout.tp << " pp=" << layout.pp << " dp=" << layout.dp);
    ProcessGrid grid = ProcessGrid::Create(*group, GridShape{layout.tp, layout.pp, layout.dp});
    const std::vector<LayerRange> stages =
        GemmaStageLayers(config, layout.tp, layout.pp, 4, nullptr);
    const GemmaShard shard = GemmaShardAt(config, grid.shape(), grid.coords(), stages);
    if (layout.tp * layout.pp > 1) {
      EXPECT_LT(GemmaShardWeightBytes(config, shard, 4), whole_bytes) << "holds the whole model";
    }
    GemmaStage stage(config, shard,
                     LoadGemmaShard(config, shard, *Hdf5CheckpointReader::Open(path), &grid.tp()),
                     &grid.tp());
    PipelineEngine pipeline(grid, MakeGemmaStageModel(grid, std::move(stage), 3, 64),
                            {sampled_vocab});

    // This replica's sequences: i % dp == its index, in cache slots 0, 1, ...
    std::vector<size_t> mine;
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (static_cast<int>(i) % layout.dp == grid.coords().dp) mine.push_back(i);
    }
    double diff = 0, scale = 0;
    std::vector<SequenceChunk> batch;
    for (size_t j = 0; j < mine.size(); ++j) {
      batch.push_back({static_cast<int64_t>(j), prompts[mine[j]]});
    }
    const Tensor prefill = pipeline.Forward(batch, /*all_tokens=*/true);
    if (pipeline.is_driver()) {
      int64_t row = 0;
      for (size_t i : mine) {
        const Tensor& want = want_prefill[i];
        // A failed check must not return early: the other stages would wait in Serve().
        if ((row + want.dim(0)) * V > prefill.numel()) {
          ADD_FAILURE() << "prefill logits have " << prefill.dim(0) << " rows, too few";
          break;
        }
        Compare(prefill.data<float>() + row * V, want.data<float>(), want.numel(), diff, scale);
        row += want.dim(0);
      }
      EXPECT_EQ(row, prefill.dim(0));
    }
    for (int s = 0; s < kDecodeSteps; ++s) {
      batch.clear();
      for (size_t j = 0; j < mine.size(); ++j) {
        batch.push_back({static_cast<int64_t>(j), {steps[s][mine[j]]}});
      }
      const Tensor logits = pipeline.Forward(batch, /*all_tokens=*/false);
      if (!pipeline.is_driver()) continue;
      EXPECT_EQ(logits.dim(0), static_cast<int64_t>(mine.size()));
      for (size_t j = 0; j < mine.size(); ++j) {
        Compare(logits.data<float>() + static_cast<int64_t>(j) * V,
                want_decode[mine[j]][static_cast<size_t>(s)].data<float>(), V, diff, scale);
      }
    }
    if (pipeline.is_driver()) {
      const double relative = diff / scale;
      EXPECT_LE(relative, kTolerance);
      if (grid.coords().tp == 0) {
        std::printf("%s %s tp=%d pp=%d dp=%d replica %d: max |error| / max |logit| = %.2e\n",
                    name.c_str(), std::string(DTypeName(GetParam().second)).c_str(), layout.tp,
                    layout.pp, layout.dp, grid.coords().dp, relative);
      }
    }

    // Greedy generation through the pipeline gives the one-rank tokens.
    // Then sampled generation with every setting away from its default (the settings travel
    // from stage to stage in each micro-batch): the same tokens as the one-rank sampler draws.
    for (const SamplingParams* sampling : {&greedy, static_cast<const SamplingParams*>(&sampled)}) {
      std::vector<GenerationRequest> requests;
      for (size_t i : mine) {
        GenerationRequest r;
        r.prompt = prompts[i];
        r.max_new_tokens = kGenerated;
        r.sampling = *sampling;
        r.sampling.seed += i;
        requests.push_back(r);
      }
      if (pipeline.is_driver()) {
        const std::vector<GenerationResult> got =
            GeneratePipelined(pipeline, tokenizer, requests, [](size_t, std::string_view) {});
        const auto& want = sampling == &greedy ? want_tokens : want_sampled;
        for (size_t j = 0; j < mine.size(); ++j) {
          EXPECT_EQ(got[j].tokens, want[mine[j]])
              << (sampling == &greedy ? "greedy" : "sampled") << " sequence " << mine[j];
        }
      } else {
        pipeline.Serve();
      }
    }
  }
  world->Barrier();
  if (world->rank() == 0) std::filesystem::remove_all(dir);
}

// The driver may submit any number of micro-batches before it takes a result: the last stage
// returns results without blocking, so it keeps receiving while they wait to be taken. Large
// activations and logits (past MPI's eager limit) make a blocking return deadlock here.
TEST(ShardedGemmaPipeline, ManyMicroBatchesInFlightDoNotBlock) {
  auto world = MpiCommunicator::World();
  if (world->size() < 2) GTEST_SKIP() << "needs two ranks";
  std::unique_ptr<Communicator> group = world->Split(world->rank() < 2 ? 0 : 1, world->rank());
  if (world->rank() >= 2) return;
  const ModelConfig config = TestConfig("tiny-gemma2");
  ProcessGrid grid = ProcessGrid::Create(*group, GridShape{1, 2, 1});
  const std::vector<LayerRange> stages = GemmaStageLayers(config, 1, 2, 4, nullptr);
  const GemmaShard shard = GemmaShardAt(config, grid.shape(), grid.coords(), stages);
  GemmaStage stage(config, shard, RandomGemmaShard(config, shard, DType::kF32, 5), &grid.tp());
  constexpr int kMicroBatches = 100;
  PipelineEngine pipeline(grid, MakeGemmaStageModel(grid, std::move(stage), kMicroBatches, 200),
                          {});
  std::vector<int32_t> prompt(200);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 37) % 512);
  if (!pipeline.is_driver()) {
    pipeline.Serve();
    return;
  }
  for (int m = 0; m < kMicroBatches; ++m) {
    pipeline.Submit(StageOutput::kAllLogits, {{SequenceChunk{m, prompt}}});
  }
  const Tensor first = pipeline.TakeLogits();
  for (int m = 1; m < kMicroBatches; ++m) {
    const Tensor logits = pipeline.TakeLogits();
    ASSERT_EQ(logits.shape(), first.shape());
    ASSERT_EQ(0, std::memcmp(logits.raw(), first.raw(), first.nbytes())) << "micro-batch " << m;
  }
  pipeline.Finish();
  GemmaDecoder reference(config, RandomGemmaWeights(config, DType::kF32, 5));
  KvCache cache(config, 1, 200);
  const Tensor want = reference.Forward({{SequenceChunk{0, prompt}}}, cache, LogitRows::kAllTokens);
  double diff = 0, scale = 0;
  Compare(first.data<float>(), want.data<float>(), want.numel(), diff, scale);
  EXPECT_LE(diff / scale, kTolerance);
}

// A lone long prompt goes through the stages in pieces (chunked prefill): two stages run the
// 200-token prompt as three micro-batches, with one rank's logits for every token.
TEST(ShardedGemmaPipeline, ALoneLongPromptGoesInPiecesWithOneRanksLogits) {
  auto world = MpiCommunicator::World();
  if (world->size() < 2) GTEST_SKIP() << "needs two ranks";
  std::unique_ptr<Communicator> group = world->Split(world->rank() < 2 ? 0 : 1, world->rank());
  if (world->rank() >= 2) return;
  const ModelConfig config = TestConfig("tiny-gemma3");
  ProcessGrid grid = ProcessGrid::Create(*group, GridShape{1, 2, 1});
  const std::vector<LayerRange> stages = GemmaStageLayers(config, 1, 2, 4, nullptr);
  const GemmaShard shard = GemmaShardAt(config, grid.shape(), grid.coords(), stages);
  GemmaStage stage(config, shard, RandomGemmaShard(config, shard, DType::kF32, 6), &grid.tp());
  PipelineEngine pipeline(grid, MakeGemmaStageModel(grid, std::move(stage), 1, 200), {});
  std::vector<int32_t> prompt(200);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 53 + 7) % 512);
  EXPECT_EQ(pipeline.PromptPieces(200).size(), 3u);
  const Tensor got = pipeline.Forward({{SequenceChunk{0, prompt}}}, /*all_tokens=*/true);
  if (!pipeline.is_driver()) return;
  pipeline.Finish();
  GemmaDecoder reference(config, RandomGemmaWeights(config, DType::kF32, 6));
  KvCache cache(config, 1, 200);
  const Tensor want = reference.Forward({{SequenceChunk{0, prompt}}}, cache, LogitRows::kAllTokens);
  ASSERT_EQ(got.shape(), want.shape());
  double diff = 0, scale = 0;
  Compare(got.data<float>(), want.data<float>(), want.numel(), diff, scale);
  EXPECT_LE(diff / scale, kTolerance);
  std::printf("lone 200-token prompt in 3 pieces over 2 stages: max |error| / max |logit| = %.2e\n",
              diff / scale);
}

INSTANTIATE_TEST_SUITE_P(Families, ShardedGemmaTest,
                         testing::Values(std::pair{std::string("tiny-gemma"), DType::kF32},
                                         std::pair{std::string("tiny-gemma2"), DType::kF32},
                                         std::pair{std::string("tiny-gemma3"), DType::kF32},
                                         std::pair{std::string("tiny-gemma2"), DType::kBF16},
                                         std::pair{std::string("tiny-gemma"), DType::kI8},
                                         std::pair{std::string("tiny-gemma3"), DType::kI8}),
                         [](const testing::TestParamInfo<std::pair<std::string, DType>>& info) {
                           std::string name =
                               info.param.first + "_" + std::string(DTypeName(info.param.second));
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace gemmapod
