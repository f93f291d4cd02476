// RecurrentGemma on one rank, beyond the golden fixtures (recurrent_gemma_golden_test.cc): the
// decode state stays the same size however long the text, and a prompt gives the same logits
// whole, in chunks, or one token at a time, past the attention window and across a document
// reset.
#include "models/recurrent_gemma.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace gemmapod {
namespace {

RecurrentGemmaConfig TinyConfig() {
  RecurrentGemmaConfig c;
  c.name = "tiny-recurrentgemma";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 6;  // two attention layers: they share the ring's bookkeeping
  c.num_heads = 4;
  c.head_dim = 8;
  c.lru_width = 48;
  c.intermediate_size = 64;
  c.attention_window = 6;
  c.blocks = DefaultTemporalBlocks(c.num_layers);
  return c;
}

RecurrentGemmaWeights RandomWeights(const RecurrentGemmaConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  RecurrentGemmaWeights w;
  ForEachRecurrentGemmaParameter(c, w, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    slot = Tensor::Zeros(p.shape, DType::kF32);
    const float scale =
        p.shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(p.shape[1])) : 0.3f;
    std::normal_distribution<float> normal(0.0f, scale);
    for (int64_t i = 0; i < slot.numel(); ++i) slot.data<float>()[i] = normal(rng);
  });
  return w;
}

double MaxDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double d = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    d = std::max(d, static_cast<double>(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  }
  return d;
}

TEST(RecurrentGemma, DecodeStateBytesDoNotGrowWithTheText) {
  const RecurrentGemmaConfig c = TinyConfig();
  RecurrentGemma model(c, RandomWeights(c, 1));
  RecurrentGemmaState state(c, 1);
  const int64_t initial = state.bytes();
  int64_t at_3000 = 0;
  int32_t token = 2;
  for (int i = 1; i <= 10000; ++i) {
    const Tensor logits = model.Forward({0, {token}, {}}, state, false);
    token = static_cast<int32_t>((token * 31 + 7) % c.vocab_size);
    if (i == 3000) at_3000 = state.bytes();
  }
  EXPECT_EQ(state.tokens_seen(0), 10000);
  EXPECT_EQ(at_3000, initial);
  EXPECT_EQ(state.bytes(), at_3000);
  // Per recurrent layer: conv1d_width - 1 inputs and the LRU state; per attention layer: the
  // window's keys and values; plus the bookkeeping (ring slots, positions, the documents of the
  // convolution's inputs).
  const int64_t recurrent = 4 * (3 * 48 + 48) * 4;
  const int64_t attention = 2 * (2 * 6 * 8 * 4);
  EXPECT_EQ(initial, recurrent + attention + 2 * 6 * 8 + 20 + 3 * 8);
}

TEST(RecurrentGemma, WholeChunkedAndStepwisePrefillAgree) {
  const RecurrentGemmaConfig c = TinyConfig();
  RecurrentGemma model(c, RandomWeights(c, 2));
  std::vector<int32_t> tokens, pos;
  for (int i = 0; i < 23; ++i) {
    tokens.push_back((i * 13 + 5) % 97);
    pos.push_back(i < 9 ? i : i - 9);  // a second document starts at token 9
  }
  RecurrentGemmaState whole_state(c, 1);
  const Tensor whole = model.Forward({0, tokens, pos}, whole_state, true);
  ASSERT_EQ(whole.dim(0), 23);

  // In chunks of 5 (chunk boundaries fall inside the window and next to the reset).
  RecurrentGemmaState chunk_state(c, 1);
  for (int begin = 0; begin < 23; begin += 5) {
    const int end = std::min(begin + 5, 23);
    const Tensor part = model.Forward({0,
                                       {tokens.begin() + begin, tokens.begin() + end},
                                       {pos.begin() + begin, pos.begin() + end}},
                                      chunk_state, true);
    EXPECT_LE(MaxDiff(part, whole.Slice(begin, end).Clone()), 1e-5) << "chunk at " << begin;
  }
  // One token at a time.
  RecurrentGemmaState step_state(c, 1);
  for (int t = 0; t < 23; ++t) {
    const Tensor row = model.Forward({0, {tokens[t]}, {pos[t]}}, step_state, false);
    EXPECT_LE(MaxDiff(row, whole.Slice(t, t + 1).Clone()), 1e-5) << "token " << t;
  }
  // The second document does not see the first: its logits equal a fresh run of it alone.
  RecurrentGemmaState fresh(c, 1);
  const Tensor second = model.Forward({0, {tokens.begin() + 9, tokens.end()}, {}}, fresh, true);
  EXPECT_LE(MaxDiff(second, whole.Slice(9, 23).Clone()), 1e-5);
}

}  // namespace
}  // namespace gemmapod
