// T5Gemma split over the ranks of a job against the whole model on one rank: encoder and decoder
// each with tp 1 or 2, on separate stages (one or more per stack) or sharing one, on the golden
// fixtures' balanced and unbalanced pairs (tests/fixtures/models/t5gemma). Teacher-forced logits
// of a right-padded batch, and token-by-token decode through the cross-attention and
// self-attention caches, must equal one rank's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/import/convert.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/comm/mpi_communicator.h"
#include "serving/t5gemma_pipeline.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;

constexpr double kTolerance = 1e-5;  // max |sharded - one rank| / max |one rank|

double RelativeError(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return INFINITY;
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff,
                    static_cast<double>(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want.data<float>()[i])));
  }
  return diff / scale;
}

struct LayoutCase {
  int encoder_tp, encoder_stages, decoder_tp, decoder_stages;
};

const LayoutCase kLayouts[] = {
    {1, 0, 1, 1},                // one rank
    {2, 0, 2, 1},                // one stage, both stacks at tp 2
    {1, 1, 1, 1},                // encoder and decoder on separate ranks
    {1, 1, 2, 1},                // decoder wider than encoder
    {2, 1, 1, 1},                // encoder wider than decoder (the 9B-2B shape)
    {2, 1, 2, 1}, {1, 2, 1, 2},  // two stages each
    {1, 3, 1, 1}, {1, 1, 1, 3}, {2, 1, 1, 2},
};

class ShardedT5Gemma : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    world_ = MpiCommunicator::World();
    const fs::path dir = fs::path("tests/fixtures/models/t5gemma") / GetParam();
    std::ifstream in(dir / "reference.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    padded_encoder_ = j.at("padded").at("encoder_ids").get<std::vector<Ids>>();
    padded_decoder_ = j.at("padded").at("decoder_ids").get<std::vector<Ids>>();
    encoder_ = j.at("cases")[0].at("encoder_ids").get<Ids>();
    decoder_ = j.at("cases")[0].at("decoder_ids").get<Ids>();
    // Every rank converts its own copy (no shared file to race on).
    path_ = fs::temp_directory_path() / StrCat("t5g-sharded-", GetParam(), "-", getpid(), ".h5");
    ConvertOptions options;
    options.dtype = "f32";
    options.overwrite = true;
    Convert(dir.string(), path_.string(), options);
  }
  void TearDown() override { fs::remove(path_); }

  std::unique_ptr<Communicator> world_;
  fs::path path_;
  std::vector<Ids> padded_encoder_, padded_decoder_;
  Ids encoder_, decoder_;
};

TEST_P(ShardedT5Gemma, EveryLayoutMatchesOneRank) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(path_.string());
  const T5GemmaConfig config = T5GemmaFromAttributes(reader->config(), path_.string());
  // The reference, on every rank: the whole model.
  T5Gemma whole = LoadT5GemmaCheckpoint(path_.string());
  const Tensor want_batch = whole.Forward(padded_encoder_, padded_decoder_);
  const Tensor want_steps = whole.Forward({encoder_}, {decoder_});
  const int64_t V = config.decoder.vocab_size;

  int ran = 0;
  for (const LayoutCase& lc : kLayouts) {
    const T5GemmaLayout layout = MakeT5GemmaLayout(config, lc.encoder_tp, lc.encoder_stages,
                                                   lc.decoder_tp, lc.decoder_stages);
    const int n = layout.world_size();
    if (n > world_->size()) continue;
    ++ran;
    const bool in = world_->rank() < n;
    std::unique_ptr<Communicator> group = world_->Split(in ? 0 : 1, world_->rank());
    if (!in) continue;
    SCOPED_TRACE(layout.Describe());
    T5GemmaPipeline pipeline(*group, layout, config, *reader, 2, 16);

    // A right-padded batch of two, teacher-forced: two micro-batches in flight over two decoder
    // stages.
    pipeline.Encode(padded_encoder_);
    const std::vector<SequenceChunk> chunks{{0, padded_decoder_[0]}, {1, padded_decoder_[1]}};
    const Tensor got_batch = pipeline.Decode(chunks, true);
    const double batch_error = RelativeError(got_batch, want_batch);
    EXPECT_LT(batch_error, kTolerance);

    // Token by token: the encoder once, then one decoder token per step.
    pipeline.Encode({encoder_});
    double step_error = 0;
    for (size_t i = 0; i < decoder_.size(); ++i) {
      const std::vector<SequenceChunk> step{{0, {decoder_[i]}}};
      const Tensor got = pipeline.Decode(step, false);
      const Tensor want = want_steps.Slice(static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
      ASSERT_EQ(got.dim(1), V);
      step_error = std::max(step_error, RelativeError(got, want));
    }
    EXPECT_LT(step_error, kTolerance);
    if (group->rank() == 0) {
      std::printf("T5G_SHARDED %s [%s] batch %.3g steps %.3g\n", GetParam(),
                  layout.Describe().c_str(), batch_error, step_error);
    }
  }
  EXPECT_GE(ran, world_->size() >= 4 ? 10 : 1);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ShardedT5Gemma, ::testing::Values("balanced", "unbalanced"));

}  // namespace
}  // namespace gemmapod
