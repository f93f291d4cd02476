// gemmapod convert on GGUF files (models/gguf_gemma.cc): tiny Gemma 1, 2 and 3 GGUF files written
// as llama.cpp's convert_hf_to_gguf.py writes them (tools/golden/make_gemma_gguf_fixtures.py, from
// the Hugging Face fixtures of golden_test.cc; llama.cpp itself loads them and tokenizes as
// SentencePiece does) must convert to the checkpoint their Hugging Face directory converts to:
// the same config field by field, every tensor (norms with llama.cpp's `1 + w` undone, Q8_0 and
// F16 tensors within their rounding), the same logits, and a tokenizer rebuilt from the
// tokenizer.ggml.* arrays that encodes and decodes as the directory's tokenizer.model. Bad files
// fail naming the file and the key or tensor, and --quantize int8 works from GGUF too.
//
// GGUF cannot say everything a Hugging Face config does: no key holds query_pre_attn_scalar, and
// llama.cpp scales attention by head_dim^-1/2 (hidden/heads for the 27B sizes), as gemmapod does.
// The tiny gemma2 uses 20 != head_dim 16, so its GGUF file describes a model with scale 16^-1/2
// (llama.cpp reports f_attn_scale 0.25 for it); the tests expect exactly that difference.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_weights.h"
#include "models/import/convert.h"
#include "runtime/checkpoint/gguf.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/error.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The f32 bound of golden_test.cc: what two f32 runs of one model may differ by, as a fraction of
// the largest logit (they reach 5e-7 to 8e-7 against transformers).
constexpr double kF32LogitBound = 2.5e-6;

// The tensors the script stores other than F32 (its QUANTIZED table); every other tensor is F32.
struct StoredTensor {
  const char* gguf_name;
  const char* hf_name;
  GgmlType type;
};

std::vector<StoredTensor> NotF32(const std::string& fixture) {
  if (fixture == "gemma2") {
    return {{"blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight", GgmlType::kQ8_0},
            {"blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", GgmlType::kF16}};
  }
  if (fixture == "gemma3") {
    return {{"token_embd.weight", "model.embed_tokens.weight", GgmlType::kQ8_0},
            {"blk.5.attn_q.weight", "model.layers.5.self_attn.q_proj.weight", GgmlType::kF16}};
  }
  return {};
}

GgmlType StoredType(const std::string& fixture, const std::string& hf_name) {
  for (const StoredTensor& t : NotF32(fixture)) {
    if (hf_name == t.hf_name) return t.type;
  }
  return GgmlType::kF32;
}

bool IsNorm(const std::string& name) {
  return name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0;
}

fs::path GgufFixture(const std::string& fixture) {
  return fs::path("tests/fixtures/gguf") / StrCat("tiny-", fixture, ".gguf");
}
fs::path HfFixture(const std::string& fixture) {
  return fs::path("tests/fixtures/models") / fixture;
}

// Half the spacing of f16 values at |x|: the most that rounding x to f16 moves it (subnormal
// spacing 2^-24 below 2^-14; ties included).
double HalfUlpF16(float x) {
  const double a = std::abs(static_cast<double>(x));
  if (a < std::ldexp(1.0, -14)) return std::ldexp(1.0, -25);
  int e = 0;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1): the binade's exponent is e - 1
  return std::ldexp(1.0, e - 1 - 10 - 1);
}

// The most Q8_0 can move an element of a 32-element block whose largest |value| is `amax`, as
// gguf-py (bit-exact with ggml) quantizes: d = amax / 127 in f32, q = round(x * (1 / d)) (off by
// at most 1/2 plus the f32 error of x * (1/d), |x/d| <= 127), stored d rounded to f16 (at most
// half an f16 ulp: d * 2^-11 in the normal range, 2^-25 below it), dequantized as f16(d) * q
// (exact in f32: 11 x 8 significant bits). |f16(d) q - x| <= |f16(d) - d| |q| + d |q - x/d|.
double Q8_0Bound(double amax) {
  const double d = amax / 127 * (1 + 0x1p-20);  // the f32 rounding of amax / 127, generously
  const double d_f16_error = std::max(d * 0x1p-11, 0x1p-25);
  return 127 * d_f16_error + d * (0.5 + 127 * 0x1p-22);
}

// A first-order estimate of how far the stored rounding moves the logits, as a fraction of the
// largest logit: each rounded matrix moves an element by at most Q8_0Bound(amax) / amax =
// (1/2 + 127 * 2^-11) / 127 of its block's largest |value| (F16: 2^-11 of the value), and those
// relative perturbations add up along a token's path (the tied embedding twice: looked up and as
// the head). Not a worst case: a logit is a sum of products far larger than itself, so relative
// errors grow on the way (the fixtures reach 1.0 to 1.5 times the estimate).
double QuantizedLogitEstimate(const std::string& fixture) {
  double estimate = 0;
  for (const StoredTensor& t : NotF32(fixture)) {
    const double per_use = t.type == GgmlType::kQ8_0 ? Q8_0Bound(127) / 127 : 0x1p-11;
    estimate += per_use * (std::string(t.hf_name) == "model.embed_tokens.weight" ? 2 : 1);
  }
  return estimate;
}

double MaxAbs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max<double>(m, std::abs(t.data<float>()[i]));
  return m;
}

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    m = std::max<double>(m, std::abs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  }
  return m;
}

Tensor Prefill(GemmaDecoder& model, const std::vector<int32_t>& tokens) {
  KvCache cache(model.config(), 1, static_cast<int64_t>(tokens.size()));
  return model.Forward({{SequenceChunk{0, tokens}}}, cache, LogitRows::kAllTokens);
}

// The three token sequences of the fixture's reference.json (longer than the sliding window).
std::vector<std::vector<int32_t>> Sequences(const std::string& fixture) {
  std::ifstream in(HfFixture(fixture) / "reference.json");
  EXPECT_TRUE(in.good()) << fixture;
  return nlohmann::json::parse(in).at("sequences").get<std::vector<std::vector<int32_t>>>();
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A copy of `src` at `dst` with the one occurrence of `from` replaced by `to` (same length, so
// every offset in the file stays valid).
void PatchedCopy(const fs::path& src, const fs::path& dst, const std::string& from,
                 const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  std::string bytes = ReadBytes(src);
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos) << src;
  ASSERT_EQ(bytes.find(from, at + 1), std::string::npos) << "more than one occurrence in " << src;
  bytes.replace(at, from.size(), to);
  std::ofstream(dst, std::ios::binary) << bytes;
}

// A fresh directory per test, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = StrCat(info->test_suite_name(), ".", info->name());
    std::replace(name.begin(), name.end(), '/', '_');  // parameterised names hold slashes
    path_ = fs::temp_directory_path() / StrCat("gguf-convert-test-", getpid(), "-", name);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

class GgufConvertTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    fixture_ = GetParam();
    ASSERT_TRUE(fs::exists(GgufFixture(fixture_))) << GgufFixture(fixture_);
    hf_h5_ = dir_.path() / "hf.h5";
    gguf_h5_ = dir_.path() / "gguf.h5";
    // f32 from both sides (gemma2's directory holds bf16, widened exactly), so tensors compare
    // directly and logits run through the same kernels.
    ConvertOptions f32;
    f32.dtype = "f32";
    Convert(HfFixture(fixture_).string(), hf_h5_.string(), f32);
    const ConvertReport r = Convert(GgufFixture(fixture_).string(), gguf_h5_.string(), f32);
    EXPECT_EQ(r.model_type, StrCat("GGUF ", fixture_ == "gemma1"   ? "gemma"
                                            : fixture_ == "gemma2" ? "gemma2"
                                                                   : "gemma3_text"));
    EXPECT_TRUE(r.tokenizer_copied);
  }

  // The Hugging Face model as the GGUF file describes it: the directory's config with the
  // attention scale llama.cpp derives (head_dim; hidden/heads only for the 27B sizes, which these
  // are not), taken from neither conversion so that a wrong scale fails the logits too, and the
  // directory's weights with the tensors the file stores as Q8_0 or F16 replaced by the file's
  // (rounded) values when `rounded` is set.
  GemmaDecoder HfModelAsGgufDescribes(bool rounded) const {
    const auto hf = Hdf5CheckpointReader::Open(hf_h5_.string());
    const auto gguf = Hdf5CheckpointReader::Open(gguf_h5_.string());
    ModelConfig config = FromAttributes(hf->config(), hf_h5_.string());
    config.query_pre_attn_scalar = static_cast<double>(config.head_dim);
    GemmaWeights weights = LoadGemmaWeights(config, *hf);
    if (rounded) {
      ForEachGemmaParameter(config, weights, [&](const GemmaParameter& p, Tensor& slot) {
        if (StoredType(fixture_, p.name) != GgmlType::kF32) slot = gguf->Read(p.name);
      });
    }
    return GemmaDecoder(config, std::move(weights));
  }

  std::string fixture_;
  TempDir dir_;
  fs::path hf_h5_, gguf_h5_;
};

// The fixture is what the tests below assume: the non-F32 tensors are the ones listed, of the
// listed types, and everything else is F32.
TEST_P(GgufConvertTest, FixtureStoresTheListedTypes) {
  const GgufFile file(GgufFixture(fixture_).string());
  EXPECT_EQ(file.String("general.architecture"), fixture_ == "gemma1"   ? "gemma"
                                                 : fixture_ == "gemma2" ? "gemma2"
                                                                        : "gemma3");
  int not_f32 = 0;
  for (const GgufTensorInfo& t : file.tensors()) {
    if (t.type == GgmlType::kF32) continue;
    ++not_f32;
    bool listed = false;
    for (const StoredTensor& s : NotF32(fixture_)) {
      listed = listed || (t.name == s.gguf_name && t.type == s.type);
    }
    EXPECT_TRUE(listed) << t.name << " is " << GgmlTypeName(t.type);
  }
  EXPECT_EQ(not_f32, static_cast<int>(NotF32(fixture_).size()));
}

// (a) The config from the <arch>.* keys equals the one from config.json, field by field.
TEST_P(GgufConvertTest, ConfigMatchesHuggingFace) {
  const ModelConfig hf_config =
      FromAttributes(Hdf5CheckpointReader::Open(hf_h5_.string())->config(), hf_h5_.string());
  const ModelConfig gguf_config =
      FromAttributes(Hdf5CheckpointReader::Open(gguf_h5_.string())->config(), gguf_h5_.string());
  const Attributes hf = ToAttributes(hf_config);
  const Attributes gguf = ToAttributes(gguf_config);
  std::vector<std::string> hf_keys, gguf_keys;
  for (const auto& [k, v] : hf) hf_keys.push_back(k);
  for (const auto& [k, v] : gguf) gguf_keys.push_back(k);
  ASSERT_EQ(hf_keys, gguf_keys);
  for (const auto& [key, value] : hf) {
    const AttributeValue& theirs = gguf.at(key);
    if (key == "name") {
      EXPECT_EQ(std::get<std::string>(theirs), StrCat("tiny-", fixture_));  // general.name
    } else if (key == "rms_norm_eps") {
      // GGUF stores it as f32 (1e-6 reads back as 9.99999997e-7); the model computes in f32.
      EXPECT_EQ(static_cast<float>(std::get<double>(theirs)),
                static_cast<float>(std::get<double>(value)));
    } else if (key == "query_pre_attn_scalar") {
      EXPECT_EQ(std::get<double>(theirs), static_cast<double>(gguf_config.head_dim));
      if (fixture_ != "gemma2") {
        EXPECT_EQ(theirs, value) << key;
      }
    } else {
      EXPECT_EQ(theirs, value) << key;
    }
  }
  if (fixture_ == "gemma2") {
    // The cases that matter, spelled out: both soft-caps come through, and the scale differs.
    EXPECT_EQ(gguf_config.attn_logit_softcap, 2.0);
    EXPECT_EQ(gguf_config.final_logit_softcap, 10.0);
    EXPECT_EQ(hf_config.query_pre_attn_scalar, 20.0);
    EXPECT_EQ(gguf_config.query_pre_attn_scalar, 16.0);
  }
}

// (b) Every tensor: F32 ones bit for bit (norms as llama.cpp's converter stored them, (w + 1) in
// f32, less 1), Q8_0 and F16 ones within their rounding.
TEST_P(GgufConvertTest, EveryTensorMatches) {
  const auto hf = Hdf5CheckpointReader::Open(hf_h5_.string());
  const auto gguf = Hdf5CheckpointReader::Open(gguf_h5_.string());
  std::vector<std::string> hf_names, gguf_names;
  for (const TensorInfo& t : hf->List()) hf_names.push_back(t.name);
  for (const TensorInfo& t : gguf->List()) gguf_names.push_back(t.name);
  ASSERT_EQ(hf_names, gguf_names);
  int norms = 0;
  for (const std::string& name : hf_names) {
    const Tensor want = hf->Read(name);
    const Tensor got = gguf->Read(name);
    ASSERT_EQ(want.dtype(), DType::kF32) << name;
    ASSERT_EQ(got.dtype(), DType::kF32) << name;
    ASSERT_EQ(want.shape(), got.shape()) << name;
    const float* w = want.data<float>();
    const float* g = got.data<float>();
    const GgmlType type = StoredType(fixture_, name);
    if (IsNorm(name)) {
      ++norms;
      ASSERT_EQ(type, GgmlType::kF32) << name;
      int64_t bad = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        const float stored = w[i] + 1.0f;  // what the converter wrote
        const float expected = stored - 1.0f;
        bad += std::memcmp(&expected, &g[i], sizeof(float)) != 0;
      }
      EXPECT_EQ(bad, 0) << name << ": not (w + 1) - 1 in f32";
    } else if (type == GgmlType::kF32) {
      EXPECT_EQ(std::memcmp(w, g, want.nbytes()), 0) << name;
    } else if (type == GgmlType::kF16) {
      double worst = 0;  // error / bound
      for (int64_t i = 0; i < want.numel(); ++i) {
        worst = std::max(worst, std::abs(static_cast<double>(g[i]) - w[i]) / HalfUlpF16(w[i]));
      }
      std::printf("GGUF_ROUNDING %s %s F16: max error / bound = %.3f\n", fixture_.c_str(),
                  name.c_str(), worst);
      EXPECT_LE(worst, 1.0) << name;
    } else {
      ASSERT_EQ(type, GgmlType::kQ8_0);
      const int64_t cols = want.dim(-1);
      ASSERT_EQ(cols % 32, 0) << name;
      double worst = 0;
      for (int64_t block = 0; block < want.numel() / 32; ++block) {
        const float* x = w + block * 32;
        double amax = 0;
        for (int i = 0; i < 32; ++i) amax = std::max<double>(amax, std::abs(x[i]));
        const double bound = Q8_0Bound(amax);
        for (int i = 0; i < 32; ++i) {
          const double err = std::abs(static_cast<double>(g[block * 32 + i]) - x[i]);
          if (bound == 0) {
            EXPECT_EQ(err, 0) << name;
          } else {
            worst = std::max(worst, err / bound);
          }
        }
      }
      std::printf("GGUF_ROUNDING %s %s Q8_0: max error / bound = %.3f\n", fixture_.c_str(),
                  name.c_str(), worst);
      EXPECT_LE(worst, 1.0) << name;
      // The bound is not vacuous (rounding to steps of d alone moves an element by up to d/2, 0.9
      // of it), and the tensor really went through Q8_0: the worst element uses half of it.
      EXPECT_GE(worst, 0.5) << name;
    }
  }
  EXPECT_EQ(norms, fixture_ == "gemma1" ? 2 * 3 + 1 : fixture_ == "gemma2" ? 4 * 4 + 1 : 6 * 7 + 1);
}

// (c) Logits, for the fixture's three sequences (longer than the sliding window). Against the
// Hugging Face model as the GGUF file describes it (the directory's config with the attention
// scale llama.cpp derives, its weights with the Q8_0 and F16 tensors' rounded values) the bound is
// golden_test.cc's f32 one, and the logits reach 0: the norm weights differ by the f32 rounding of
// 1 + w, but the norm multiplies by 1.0f + w' and for w' = (1 + w) - 1 (an exact subtraction)
// that is exactly the 1 + w the converter stored. Against the directory's own weights the
// difference is the effect of the Q8_0/F16 rounding, held to 3 times its first-order estimate;
// gemma1 stores everything as F32, so it also matches transformers' reference logits as
// golden_test.cc's conversion of the directory does.
TEST_P(GgufConvertTest, LogitsMatch) {
  GemmaDecoder from_gguf = LoadGemmaCheckpoint(gguf_h5_.string());
  GemmaDecoder described = HfModelAsGgufDescribes(/*rounded=*/true);
  GemmaDecoder original = HfModelAsGgufDescribes(/*rounded=*/false);
  const std::vector<std::vector<int32_t>> sequences = Sequences(fixture_);
  for (size_t s = 0; s < sequences.size(); ++s) {
    const Tensor ours = Prefill(from_gguf, sequences[s]);
    const Tensor want = Prefill(described, sequences[s]);
    const double scale = MaxAbs(want);
    const double tight = MaxAbsDiff(ours, want) / scale;
    const double rounding = MaxAbsDiff(ours, Prefill(original, sequences[s])) / scale;
    std::printf(
        "GGUF_LOGITS %s seq %zu: vs described model %.3g, vs unrounded weights %.3g "
        "(first-order estimate %.3g)\n",
        fixture_.c_str(), s, tight, rounding, QuantizedLogitEstimate(fixture_));
    EXPECT_LE(tight, kF32LogitBound) << "sequence " << s;
    if (NotF32(fixture_).empty()) {
      EXPECT_LE(rounding, kF32LogitBound) << "sequence " << s;
      // And against the reference implementation itself.
      const Tensor reference =
          ReadNpy((HfFixture(fixture_) / StrCat("logits_", s, ".npy")).string());
      const double vs_transformers = MaxAbsDiff(ours, reference) / MaxAbs(reference);
      std::printf("GGUF_LOGITS %s seq %zu: vs transformers %.3g\n", fixture_.c_str(), s,
                  vs_transformers);
      EXPECT_LE(vs_transformers, kF32LogitBound) << "sequence " << s;
    } else {
      EXPECT_LE(rounding, 3 * QuantizedLogitEstimate(fixture_)) << "sequence " << s;
    }
  }
}

// (d) The tokenizer rebuilt from tokenizer.ggml.* encodes and decodes as tokenizer.model.
TEST_P(GgufConvertTest, TokenizerMatchesSentencePieceModel) {
  const std::optional<std::string> embedded = ReadEmbeddedTokenizer(gguf_h5_.string());
  ASSERT_TRUE(embedded.has_value());
  const Tokenizer ours = Tokenizer::FromBytes(*embedded, gguf_h5_.string());
  const Tokenizer want = Tokenizer::FromFile((HfFixture(fixture_) / "tokenizer.model").string());
  ASSERT_EQ(ours.vocab_size(), want.vocab_size());
  EXPECT_EQ(ours.bos_id(), want.bos_id());
  EXPECT_EQ(ours.eos_id(), want.eos_id());
  EXPECT_EQ(ours.pad_id(), want.pad_id());
  for (const char* piece :
       {"<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"}) {
    EXPECT_EQ(ours.PieceId(piece), want.PieceId(piece)) << piece;
  }
  // Every id on its own (byte pieces decode to U+FFFD alone; control pieces to nothing).
  for (int32_t id = 0; id < want.vocab_size(); ++id) {
    const std::vector<int32_t> one = {id};
    EXPECT_EQ(ours.Decode(one), want.Decode(one)) << "id " << id;
  }
  const std::vector<std::string> texts = {
      "The license is granted to any person",
      // Characters the 512-piece vocabulary lacks: byte fallback.
      "na\xC3\xAFve caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80 \xD0\x9F\xD1\x80\xD0\xB8",
      // Runs of spaces, leading and trailing; newlines and tabs.
      "  two  spaces   three    four\n\n\ttab\r\n ",
      // User-defined markers, matched where the text spells them; control pieces are not.
      "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n<mask> <bos><eos><pad><unk>",
      "12345 3.14159 0x1F",
      "",
  };
  for (const std::string& text : texts) {
    for (bool bos : {true, false}) {
      const std::vector<int32_t> ids = ours.Encode(text, bos);
      EXPECT_EQ(ids, want.Encode(text, bos)) << text;
      const std::vector<int32_t> body(ids.begin() + (bos && !ids.empty() ? 1 : 0), ids.end());
      EXPECT_EQ(ours.Decode(body), text);
    }
  }
}

// --quantize int8 from GGUF: every matrix is QuantizeRowsInt8 of the f32 checkpoint's (so within
// half a row scale of it, checked too), norms stay f32, the all-F32 gemma1 gives the matrices
// --quantize int8 gives from its directory, and the logits stay within the int8 rounding's reach.
TEST_P(GgufConvertTest, Int8QuantizesTheGgufValues) {
  const fs::path int8_h5 = dir_.path() / "int8.h5";
  ConvertOptions int8;
  int8.quantize = "int8";
  Convert(GgufFixture(fixture_).string(), int8_h5.string(), int8);
  const auto f32 = Hdf5CheckpointReader::Open(gguf_h5_.string());
  const auto q8 = Hdf5CheckpointReader::Open(int8_h5.string());
  int matrices = 0;
  for (const TensorInfo& info : f32->List()) {
    const Tensor w = f32->Read(info.name);
    if (IsNorm(info.name)) {
      const Tensor n = q8->Read(info.name);
      ASSERT_EQ(n.dtype(), DType::kF32) << info.name;
      EXPECT_EQ(std::memcmp(n.raw(), w.raw(), w.nbytes()), 0) << info.name;
      continue;
    }
    ++matrices;
    const Tensor q = q8->Read(info.name);
    const Tensor scale = q8->Read(info.name + "_scale");
    ASSERT_EQ(q.dtype(), DType::kI8) << info.name;
    ASSERT_EQ(q.shape(), w.shape()) << info.name;
    const int64_t rows = w.dim(0), cols = w.dim(1);
    Tensor want_q = Tensor::Zeros({rows, cols}, DType::kI8);
    Tensor want_scale = Tensor::Zeros({rows}, DType::kF32);
    cpu::QuantizeRowsInt8(w.data<float>(), rows, cols, want_q.data<int8_t>(),
                          want_scale.data<float>());
    EXPECT_EQ(std::memcmp(q.raw(), want_q.raw(), q.nbytes()), 0) << info.name;
    EXPECT_EQ(std::memcmp(scale.raw(), want_scale.raw(), scale.nbytes()), 0) << info.name;
    for (int64_t r = 0; r < rows; ++r) {
      const float s = scale.data<float>()[r];
      for (int64_t c = 0; c < cols; ++c) {
        const double err = std::abs(static_cast<double>(s) * q.data<int8_t>()[r * cols + c] -
                                    w.data<float>()[r * cols + c]);
        ASSERT_LE(err, s / 2 * (1 + 0x1p-20)) << info.name << " row " << r;
      }
    }
  }
  if (NotF32(fixture_).empty()) {
    // The directory holds the same values, so --quantize int8 from it writes the same matrices.
    const fs::path from_hf = dir_.path() / "int8-hf.h5";
    Convert(HfFixture(fixture_).string(), from_hf.string(), int8);
    const auto hf_q8 = Hdf5CheckpointReader::Open(from_hf.string());
    for (const TensorInfo& info : hf_q8->List()) {
      if (IsNorm(info.name)) continue;  // f32 1 + w rounding, as in EveryTensorMatches
      const Tensor a = hf_q8->Read(info.name);
      const Tensor b = q8->Read(info.name);
      ASSERT_EQ(a.shape(), b.shape()) << info.name;
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << info.name;
    }
  }
  const ModelConfig config = LoadGemmaCheckpoint(int8_h5.string()).config();
  EXPECT_EQ(config.quantization, WeightQuantization::kInt8);
  EXPECT_EQ(matrices, 1 + 7 * config.num_layers);

  // Each element moves by at most 1/254 of its row's largest |value|; a token's logits pass
  // through the embedding (looked up and, tied, as the head) and the 7 matrices of every layer.
  // Adding those relative perturbations along the path gives a first-order bound of
  // (2 + 7 * layers) / 254 of the largest logit. Like QuantizedLogitEstimate it is no worst case
  // (relative errors grow in the sums), but the int8 errors of many matrices partly cancel: the
  // fixtures reach 0.07 to 0.35 of it (printed).
  const double bound = (2.0 + 7.0 * static_cast<double>(config.num_layers)) / 254;
  GemmaDecoder f32_model = LoadGemmaCheckpoint(gguf_h5_.string());
  GemmaDecoder int8_model = LoadGemmaCheckpoint(int8_h5.string());
  for (const std::vector<int32_t>& tokens : Sequences(fixture_)) {
    const Tensor want = Prefill(f32_model, tokens);
    const double err = MaxAbsDiff(Prefill(int8_model, tokens), want) / MaxAbs(want);
    std::printf("GGUF_INT8 %s %zu tokens: max error / max |logit| = %.3g (bound %.3g)\n",
                fixture_.c_str(), tokens.size(), err, bound);
    EXPECT_LE(err, bound);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufConvertTest,
                         ::testing::Values("gemma1", "gemma2", "gemma3"));

std::string ConvertError(const fs::path& src, const fs::path& dst) {
  try {
    Convert(src.string(), dst.string(), ConvertOptions{});
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Nothing but the inputs remains: no output, no temporary file.
void ExpectOnlyInputs(const fs::path& dir, const fs::path& input) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_EQ(entry.path(), input) << "left behind: " << entry.path();
  }
}

TEST(GgufConvertErrors, NonGemmaArchitectureNamesFileAndKey) {
  TempDir dir;
  const fs::path bad = dir.path() / "llama.gguf";
  // general.architecture's value: u32 type 8 (string), u64 length 5, "gemma".
  const std::string value_header("\x08\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00", 12);
  PatchedCopy(GgufFixture("gemma1"), bad, "general.architecture" + value_header + "gemma",
              "general.architecture" + value_header + "llama");
  ASSERT_EQ(GgufFile(bad.string()).String("general.architecture"), "llama");
  const std::string error = ConvertError(bad, dir.path() / "out.h5");
  EXPECT_THAT(error, HasSubstr(bad.string()));
  EXPECT_THAT(error, HasSubstr("key 'general.architecture' is 'llama'"));
  ExpectOnlyInputs(dir.path(), bad);
}

TEST(GgufConvertErrors, MissingTensorIsNamed) {
  TempDir dir;
  const fs::path bad = dir.path() / "no-k.gguf";
  // Renamed in place to a name with no Gemma counterpart: blk.1.attn_k.weight is gone.
  PatchedCopy(GgufFixture("gemma2"), bad, "blk.1.attn_k.weight", "blk.1.attn_x.weight");
  ASSERT_FALSE(GgufFile(bad.string()).HasTensor("blk.1.attn_k.weight"));
  const std::string error = ConvertError(bad, dir.path() / "out.h5");
  EXPECT_THAT(error, HasSubstr(bad.string()));
  EXPECT_THAT(error, HasSubstr("tensor 'model.layers.1.self_attn.k_proj.weight' is missing"));
  ExpectOnlyInputs(dir.path(), bad);
}

}  // namespace
}  // namespace gemmapod
