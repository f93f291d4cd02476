// Our T5Gemma against transformers' T5GemmaForConditionalGeneration (the reference;
// tools/golden/make_t5gemma_fixtures.py, versions pinned there), on two tiny random models: a
// balanced pair and an unbalanced one (a wider, deeper encoder than decoder, MQA decoder, head_dim
// x heads != width, a sliding window per stack). Each is converted from its Hugging Face
// directory; its logits must match the reference's for teacher-forced decoding, a right-padded
// batch, token-by-token decoding through the caches, and its greedy continuation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/import/convert.h"
#include "models/t5gemma/t5gemma.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = "tests/fixtures/models/t5gemma";
constexpr double kBound = 1e-4;  // of the largest logit, the bound

using Ids = std::vector<int32_t>;

struct Case {
  Ids encoder, decoder;
  std::string logits;
  double max_abs = 0;
};

struct Reference {
  std::vector<Case> cases;
  std::vector<Ids> padded_encoder, padded_decoder;
  Ids greedy_prompt, greedy;
};

Reference LoadReference(const fs::path& dir) {
  std::ifstream in(dir / "reference.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  Reference r;
  for (const auto& c : j.at("cases")) {
    r.cases.push_back({c.at("encoder_ids").get<Ids>(), c.at("decoder_ids").get<Ids>(),
                       c.at("logits").get<std::string>(), c.at("max_abs_logit").get<double>()});
  }
  r.padded_encoder = j.at("padded").at("encoder_ids").get<std::vector<Ids>>();
  r.padded_decoder = j.at("padded").at("decoder_ids").get<std::vector<Ids>>();
  r.greedy_prompt = j.at("greedy").at("encoder_ids").get<Ids>();
  r.greedy = j.at("greedy").at("continuation").get<Ids>();
  return r;
}

// max |ours - want| over `rows` rows starting at ours_row / want_row, over `scale`.
double RelativeError(const Tensor& ours, int64_t ours_row, const Tensor& want, int64_t want_row,
                     int64_t rows, double scale) {
  const int64_t cols = ours.dim(1);
  double diff = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      diff = std::max(
          diff, static_cast<double>(std::fabs(ours.data<float>()[(ours_row + r) * cols + c] -
                                              want.data<float>()[(want_row + r) * cols + c])));
    }
  }
  return diff / scale;
}

int32_t Argmax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

// Decodes `decoder` one token at a time through the caches (the encoder run once), returning
// every step's logits [n, vocab].
Tensor DecodeStepwise(T5Gemma& model, const Ids& encoder, const Ids& decoder) {
  std::vector<int32_t> tokens;
  const EncoderBatch batch = LayOutEncoderBatch({encoder}, model.config().encoder.pad_id, tokens);
  Tensor e = model.EmbedEncoder(tokens);
  model.RunEncoderLayers(e, batch);
  T5GemmaDecodeState state = model.NewDecodeState(1, static_cast<int64_t>(decoder.size()));
  model.SetEncoderMemory(model.FinishEncoder(e), batch, state);
  const int64_t V = model.config().decoder.vocab_size;
  Tensor out = Tensor::Empty({static_cast<int64_t>(decoder.size()), V}, DType::kF32);
  for (size_t i = 0; i < decoder.size(); ++i) {
    const std::vector<SequenceChunk> chunk{{0, {decoder[i]}}};
    const BatchLayout layout = LayOutBatch(chunk, *state.self, tokens);
    Tensor h = model.EmbedDecoder(tokens);
    model.RunDecoderLayers(h, layout, state);
    state.self->Advance(0, 1);
    const Tensor logits = model.Logits(h);
    std::copy_n(logits.data<float>(), V, out.data<float>() + static_cast<int64_t>(i) * V);
  }
  return out;
}

class T5GemmaGolden : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    dir_ = kFixtures / GetParam();
    reference_ = LoadReference(dir_);
    checkpoint_ = fs::temp_directory_path() / StrCat("t5g-", GetParam(), "-", getpid(), ".h5");
    ConvertOptions options;
    options.dtype = "f32";
    Convert(dir_.string(), checkpoint_.string(), options);
  }
  void TearDown() override { fs::remove(checkpoint_); }

  fs::path dir_;
  Reference reference_;
  fs::path checkpoint_;
};

TEST_P(T5GemmaGolden, TeacherForcedLogitsMatchTheReference) {
  T5Gemma model = LoadT5GemmaCheckpoint(checkpoint_.string());
  for (const Case& c : reference_.cases) {
    const Tensor want = ReadNpy((dir_ / c.logits).string());
    const Tensor ours = model.Forward({c.encoder}, {c.decoder});
    ASSERT_EQ(ours.shape(), want.shape()) << c.logits;
    const double err = RelativeError(ours, 0, want, 0, want.dim(0), c.max_abs);
    std::printf("T5G_MEASURED %s %s: %.3g of max|logit|\n", GetParam(), c.logits.c_str(), err);
    EXPECT_LT(err, kBound) << c.logits;
  }
}

TEST_P(T5GemmaGolden, PaddedBatchMatchesTheReference) {
  T5Gemma model = LoadT5GemmaCheckpoint(checkpoint_.string());
  const Tensor want = ReadNpy((dir_ / "padded_logits.npy").string());  // [2, Td, V]
  const int64_t Td = want.dim(1), V = want.dim(2);
  const Tensor ours = model.Forward(reference_.padded_encoder, reference_.padded_decoder);
  ASSERT_EQ(ours.dim(0), 2 * Td);
  const Tensor flat = want.Reshape({2 * Td, V});
  for (int64_t b = 0; b < 2; ++b) {
    const double scale = reference_.cases[static_cast<size_t>(b)].max_abs;
    const double err = RelativeError(ours, b * Td, flat, b * Td, Td, scale);
    std::printf("T5G_MEASURED %s padded row %lld: %.3g\n", GetParam(), static_cast<long long>(b),
                err);
    EXPECT_LT(err, kBound) << "batch row " << b;
  }
  // The padding must be what changes nothing: the padded sequence scores as it does alone.
  const Case& shorter = reference_.cases[1];
  const Tensor alone = model.Forward({shorter.encoder}, {reference_.padded_decoder[1]});
  EXPECT_LT(RelativeError(ours, Td, alone, 0, Td, shorter.max_abs), 1e-5);
  // ... and the pads are masked: unmasked, the same ids as real tokens would change the logits.
  Ids unmasked = reference_.padded_encoder[1];
  for (int32_t& id : unmasked) id = id == 0 ? 7 : id;
  const Tensor attended = model.Forward({unmasked}, {reference_.padded_decoder[1]});
  EXPECT_GT(RelativeError(attended, 0, alone, 0, Td, shorter.max_abs), 1e-3);
}

TEST_P(T5GemmaGolden, IncrementalDecodeMatchesTheReference) {
  T5Gemma model = LoadT5GemmaCheckpoint(checkpoint_.string());
  const Case& c = reference_.cases[0];
  const Tensor want = ReadNpy((dir_ / "decode_0_logits.npy").string());
  const Tensor ours = DecodeStepwise(model, c.encoder, c.decoder);
  const double err = RelativeError(ours, 0, want, 0, want.dim(0), c.max_abs);
  std::printf("T5G_MEASURED %s decode: %.3g\n", GetParam(), err);
  EXPECT_LT(err, kBound);
}

TEST_P(T5GemmaGolden, GreedyContinuationMatchesTheReference) {
  T5Gemma model = LoadT5GemmaCheckpoint(checkpoint_.string());
  const int32_t bos = model.config().decoder.bos_id;
  Ids decoder{bos};
  for (size_t step = 0; step < reference_.greedy.size(); ++step) {
    const Tensor logits = model.Forward({reference_.greedy_prompt}, {decoder});
    const int64_t V = logits.dim(1);
    decoder.push_back(Argmax(logits.data<float>() + (logits.dim(0) - 1) * V, V));
  }
  EXPECT_EQ(Ids(decoder.begin() + 1, decoder.end()), reference_.greedy);
}

TEST_P(T5GemmaGolden, ConvertsBackToTheSameHuggingFaceTensors) {
  const fs::path exported = fs::temp_directory_path() / StrCat("t5g-export-", getpid());
  fs::remove_all(exported);
  Convert(checkpoint_.string(), exported.string(), {});
  const std::unique_ptr<TensorSource> original = OpenSafetensors(dir_.string());
  const std::unique_ptr<TensorSource> written = OpenSafetensors(exported.string());
  ASSERT_EQ(original->List().size(), written->List().size());
  for (const TensorInfo& info : original->List()) {
    const Tensor a = original->Read(info.name), b = written->Read(info.name);
    ASSERT_EQ(a.shape(), b.shape()) << info.name;
    EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes())) << info.name;
  }
  // The config written reads back as the same model.
  const T5GemmaConfig back = ReadHfT5GemmaConfig((exported / "config.json").string());
  const T5GemmaConfig ours =
      T5GemmaFromAttributes(Hdf5CheckpointReader::Open(checkpoint_.string())->config(), "h5");
  EXPECT_EQ(ToAttributes(back.encoder), ToAttributes(ours.encoder));
  EXPECT_EQ(back.decoder.hidden_size, ours.decoder.hidden_size);
  EXPECT_EQ(back.decoder.sliding_window, ours.decoder.sliding_window);
  EXPECT_EQ(back.decoder.query_pre_attn_scalar, ours.decoder.query_pre_attn_scalar);
  EXPECT_TRUE(fs::exists(exported / "tokenizer.model"));
  fs::remove_all(exported);
}

TEST_P(T5GemmaGolden, Bf16AndInt8StayCloseToF32) {
  T5Gemma f32 = LoadT5GemmaCheckpoint(checkpoint_.string());
  const Case& c = reference_.cases[0];
  const Tensor want = f32.Forward({c.encoder}, {c.decoder});
  for (const char* quantize : {"none", "int8"}) {
    const fs::path path = fs::temp_directory_path() / StrCat("t5g-q-", quantize, getpid(), ".h5");
    ConvertOptions options;
    options.dtype = "bf16";
    options.quantize = quantize;
    options.overwrite = true;
    Convert(dir_.string(), path.string(), options);
    T5Gemma model = LoadT5GemmaCheckpoint(path.string());
    const double err =
        RelativeError(model.Forward({c.encoder}, {c.decoder}), 0, want, 0, want.dim(0), c.max_abs);
    std::printf("T5G_MEASURED %s bf16 quantize=%s vs f32: %.3g\n", GetParam(), quantize, err);
    EXPECT_LT(err, std::string(quantize) == "int8" ? 0.1 : 0.02) << quantize;
    EXPECT_GT(err, 0.0) << quantize << ": rounding must show";
    fs::remove(path);
  }
}

// With activation stores, both stacks save every layer's intermediates (the decoder's cross-
// attention too) and the logits stay bitwise the same.
TEST_P(T5GemmaGolden, ActivationStoresKeepBothStacksIntermediates) {
  T5Gemma model = LoadT5GemmaCheckpoint(checkpoint_.string());
  const Case& c = reference_.cases[0];
  const Tensor plain = model.Forward({c.encoder}, {c.decoder});
  ActivationStore encoder, decoder;
  model.set_activation_stores(&encoder, &decoder);
  const Tensor stored = model.Forward({c.encoder}, {c.decoder});
  model.set_activation_stores(nullptr, nullptr);
  EXPECT_EQ(RelativeError(stored, 0, plain, 0, plain.dim(0), 1.0), 0.0);
  const auto check_stack = [](const ActivationStore& store, int64_t layers, int64_t rows) {
    for (int64_t l = 0; l < layers; ++l) {
      SCOPED_TRACE(testing::Message() << "layer " << l);
      EXPECT_EQ(store.Get(l, ActivationStore::kInput).dim(0), rows);
      Tensor hidden = store.Get(l, "mlp_gate").Clone();
      ops::GeluTanh(hidden, hidden);
      ops::Mul(hidden, store.Get(l, "mlp_up"), hidden);
      EXPECT_EQ(RelativeError(hidden, 0, store.Get(l, "mlp_hidden"), 0, rows, 1.0), 0.0);
    }
  };
  const auto rows = [](const Ids& ids) { return static_cast<int64_t>(ids.size()); };
  check_stack(encoder, model.config().encoder.num_layers, rows(c.encoder));
  check_stack(decoder, model.config().decoder.num_layers, rows(c.decoder));
  for (int64_t l = 0; l < model.config().decoder.num_layers; ++l) {
    EXPECT_EQ(decoder.Get(l, "cross_attention_output").dim(0), rows(c.decoder));
    EXPECT_TRUE(decoder.Has(l, "cross_input"));
    EXPECT_FALSE(encoder.Has(l, "cross_input"));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, T5GemmaGolden, ::testing::Values("balanced", "unbalanced"));

}  // namespace
}  // namespace gemmapod
