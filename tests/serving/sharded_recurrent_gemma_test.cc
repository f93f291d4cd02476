// RecurrentGemma sharded over every tp/pp/dp layout of up to 4 ranks against one rank: a prompt
// past the attention window holding a document reset, then token-by-token decode. The weights
// are written to an .h5 file that each rank loads its shard from.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "models/recurrent_gemma/recurrent_gemma.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"
#include "runtime/error.h"
#include "sharding/recurrent_gemma_layout.h"

namespace gemmapod {
namespace {

constexpr double kTolerance = 1e-5;  // max |sharded - one rank| / max |one rank|

// Runs `chunk` through every stage of this rank's replica (collective over the replica), one
// chunk at a time, and returns the logits on every rank: [tokens, vocab] or [1, vocab]. Unlike the
// engine's chunks, `chunk` may carry document starts (segment positions), so a document reset goes
// through every layout.
Tensor ForwardOnGrid(RecurrentGemma& stage, const ProcessGrid& grid, const RecurrentChunk& chunk,
                     RecurrentGemmaState& state, bool all_logits) {
  const RecurrentGemmaConfig& c = stage.config();
  const int64_t T = static_cast<int64_t>(chunk.tokens.size());
  const RecurrentPlacement at = stage.Place(chunk, state);
  const int pp_rank = grid.coords().pp, pp = grid.shape().pp;
  Tensor h = grid.is_first_stage() ? stage.Embed(chunk.tokens)
                                   : Tensor::Empty({T, c.hidden_size}, DType::kF32);
  if (!grid.is_first_stage()) grid.pp().Recv(h, pp_rank - 1);
  stage.RunLayers(h, at, state);
  stage.Commit(at, state);
  if (!grid.is_last_stage()) grid.pp().Send(h, pp_rank + 1);
  Tensor logits = grid.is_last_stage()
                      ? stage.Logits(h, all_logits)
                      : Tensor::Empty({all_logits ? T : 1, c.vocab_size}, DType::kF32);
  if (pp > 1) grid.pp().Broadcast(logits, pp - 1);
  return logits;
}

RecurrentGemmaConfig TestConfig(int64_t kv_heads) {
  RecurrentGemmaConfig c;
  c.name = "tiny-recurrentgemma-sharded";
  c.vocab_size = 128;  // divisible by 4
  c.hidden_size = 32;
  c.num_layers = 6;  // (R, R, A) twice: pp = 4 cuts through both kinds
  c.num_heads = 4;
  c.head_dim = 8;
  c.num_kv_heads = kv_heads;  // 1 as published (MQA); 2 checks the query-to-key/value mapping
  c.lru_width = 48;
  c.intermediate_size = 64;
  c.attention_window = 6;
  c.blocks = DefaultTemporalBlocks(c.num_layers);
  return c;
}

RecurrentGemmaWeights RandomWeights(const RecurrentGemmaConfig& c) {
  std::mt19937 rng(11);
  RecurrentGemmaWeights w;
  ForEachRecurrentGemmaParameter(c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    slot = Tensor::Zeros(p.shape, DType::kF32);
    const float scale =
        p.shape.size() == 2 ? 1.5f / std::sqrt(static_cast<float>(p.shape[1])) : 0.3f;
    std::normal_distribution<float> normal(0.0f, scale);
    for (int64_t i = 0; i < slot.numel(); ++i) slot.data<float>()[i] = normal(rng);
  });
  return w;
}

double RelativeError(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff,
                    static_cast<double>(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want.data<float>()[i])));
  }
  return diff / scale;
}

class ShardedRecurrentGemma : public testing::TestWithParam<int64_t> {};

TEST_P(ShardedRecurrentGemma, EveryLayoutMatchesOneRank) {
  auto world = MpiCommunicator::World();
  const RecurrentGemmaConfig config = TestConfig(GetParam());
  const std::string path = "/tmp/gemmapod-sharded-rg.h5";
  if (world->rank() == 0) {
    RecurrentGemmaWeights w = RandomWeights(config);
    Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(path);
    writer.SetConfig(ToAttributes(config));
    ForEachRecurrentGemmaParameter(
        config, w, [&](const RecurrentGemmaParameter& p, Tensor& t) { writer.Write(p.name, t); });
    writer.Commit();
  }
  world->Barrier();

  std::vector<int32_t> prompt, pos;
  for (int i = 0; i < 17; ++i) {
    prompt.push_back((i * 37 + 3) % 128);
    pos.push_back(i < 8 ? i : i - 8);  // a second document from token 8
  }
  const std::vector<int32_t> steps = {9, 77, 3, 120, 45, 6, 64, 31, 100, 2};
  RecurrentGemma reference = LoadRecurrentGemmaCheckpoint(path);
  RecurrentGemmaState ref_state = reference.NewState(1);
  const Tensor want_prefill = reference.Forward({0, prompt, pos}, ref_state, true);
  std::vector<Tensor> want_steps;
  for (int32_t t : steps) want_steps.push_back(reference.Forward({0, {t}, {}}, ref_state, false));

  for (int dp : {1, 2}) {
    for (int pp : {1, 2, 4}) {
      for (int tp : {1, 2, 4}) {
        const int size = tp * pp * dp;
        if (size > world->size()) continue;
        std::unique_ptr<Communicator> group =
            world->Split(world->rank() < size ? 0 : 1, world->rank());
        if (world->rank() >= size) continue;
        SCOPED_TRACE(testing::Message()
                     << "kv=" << GetParam() << " tp=" << tp << " pp=" << pp << " dp=" << dp);
        ProcessGrid grid = ProcessGrid::Create(*group, GridShape{tp, pp, dp});
        const RecurrentGemmaShard shard = RecurrentGemmaShardAt(config, grid);
        RecurrentGemma stage(
            config, shard,
            LoadRecurrentGemmaShard(config, shard, *Hdf5CheckpointReader::Open(path)), &grid.tp());
        RecurrentGemmaState state = stage.NewState(1);
        if (tp * pp > 1) {
          EXPECT_LT(state.bytes(), ref_state.bytes()) << "holds the whole state";
        }
        double worst =
            RelativeError(ForwardOnGrid(stage, grid, {0, prompt, pos}, state, true), want_prefill);
        for (size_t i = 0; i < steps.size(); ++i) {
          worst = std::max(
              worst, RelativeError(ForwardOnGrid(stage, grid, {0, {steps[i]}, {}}, state, false),
                                   want_steps[i]));
        }
        std::printf(
            "recurrentgemma kv=%lld tp=%d pp=%d dp=%d replica %d: max |error| / max "
            "|logit| = %.2e\n",
            static_cast<long long>(GetParam()), tp, pp, dp, grid.coords().dp, worst);
        EXPECT_LE(worst, kTolerance);
      }
    }
  }
  world->Barrier();
  if (world->rank() == 0) std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(KeyValueHeads, ShardedRecurrentGemma, testing::Values(1, 2));

}  // namespace
}  // namespace gemmapod
