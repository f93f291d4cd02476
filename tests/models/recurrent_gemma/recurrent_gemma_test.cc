// RecurrentGemma on one rank, beyond the golden fixtures (recurrent_gemma_golden_test.cc): the
// decode state stays the same size however long the text, and a prompt gives the same logits
// whole, in chunks, or one token at a time, past the attention window and across a document
// reset.
#include "models/recurrent_gemma/recurrent_gemma.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/ops/ops.h"
#include "tests/error_of.h"

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
  // `gemmapod plan` computes the same without making a state, for shards too.
  EXPECT_EQ(RecurrentGemmaState::BytesFor(c, 1, WholeRecurrentGemma(c)), initial);
  RecurrentGemmaConfig even = c;
  even.vocab_size = 96;  // splits over 2 ranks
  for (int rank = 0; rank < 2; ++rank) {
    const RecurrentGemmaShard shard = MakeRecurrentGemmaShard(even, 2, rank, 2, 6, false, true);
    EXPECT_EQ(RecurrentGemmaState::BytesFor(even, 3, shard),
              RecurrentGemmaState(even, 3, shard).bytes());
  }
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

  // In chunks of 5 (boundaries inside the window, next to the reset) and of 7 (longer than the
  // window of 6, so a chunk overwrites the whole ring it also reads).
  for (int size : {5, 7}) {
    RecurrentGemmaState chunk_state(c, 1);
    for (int begin = 0; begin < 23; begin += size) {
      const int end = std::min(begin + size, 23);
      const Tensor part = model.Forward({0,
                                         {tokens.begin() + begin, tokens.begin() + end},
                                         {pos.begin() + begin, pos.begin() + end}},
                                        chunk_state, true);
      EXPECT_LE(MaxDiff(part, whole.Slice(begin, end).Clone()), 1e-5)
          << "chunks of " << size << " at " << begin;
    }
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

TEST(RecurrentGemma, SequencesShareAStateWithoutMixing) {
  const RecurrentGemmaConfig c = TinyConfig();
  RecurrentGemma model(c, RandomWeights(c, 3));
  std::vector<std::vector<int32_t>> texts = {{2, 5, 9, 14, 20, 27, 35, 44, 54, 65, 77},
                                             {2, 90, 81, 73, 66, 60, 55, 51, 48, 46, 45}};
  std::vector<Tensor> alone;
  for (const auto& text : texts) {
    RecurrentGemmaState state(c, 1);
    alone.push_back(model.Forward({0, text, {}}, state, true));
  }
  // Both sequences token by token, interleaved, in one state of three slots (slot 1 unused).
  RecurrentGemmaState shared(c, 3);
  for (size_t t = 0; t < texts[0].size(); ++t) {
    for (int s : {0, 2}) {
      const Tensor row = model.Forward({s, {texts[s / 2][t]}, {}}, shared, false);
      EXPECT_LE(MaxDiff(row, alone[s / 2].Slice(t, t + 1).Clone()), 1e-5) << s << " " << t;
    }
  }
  // A slot reset holds a new sequence as if fresh.
  shared.Reset(0);
  EXPECT_EQ(shared.tokens_seen(0), 0);
  EXPECT_LE(MaxDiff(model.Forward({0, texts[1], {}}, shared, true), alone[1]), 1e-5);
}

// A forward given an activation store saves what each layer's backward reads, and the saved
// tensors are the layer's own intermediates: recomputing a layer's steps from them gives the next
// saved value. The logits do not change, and a store keeping layer inputs keeps only those.
TEST(RecurrentGemma, AnActivationStoreKeepsEachLayersIntermediates) {
  const RecurrentGemmaConfig c = TinyConfig();
  RecurrentGemma model(c, RandomWeights(c, 4));
  RecurrentGemmaWeights w = RandomWeights(c, 4);  // the same values, to recompute with
  std::vector<int32_t> tokens, pos;
  for (int i = 0; i < 11; ++i) {
    tokens.push_back((i * 7 + 3) % 97);
    pos.push_back(i < 4 ? i : i - 4);  // a document starts at token 4
  }
  RecurrentGemmaState plain_state(c, 1), stored_state(c, 1);
  const Tensor plain = model.Forward({0, tokens, pos}, plain_state, true);
  ActivationStore store;
  model.set_activation_store(&store);
  const Tensor stored = model.Forward({0, tokens, pos}, stored_state, true);
  model.set_activation_store(nullptr);
  EXPECT_EQ(MaxDiff(plain, stored), 0.0) << "saving changed the forward";

  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t T = 11, lru = c.lru_width;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    SCOPED_TRACE(testing::Message() << "layer " << l);
    const RecurrentGemmaLayerWeights& lw = w.layers[static_cast<size_t>(l)];
    Tensor normed = Tensor::Empty({T, c.hidden_size}, DType::kF32);
    ops::RmsNorm(store.Get(l, ActivationStore::kInput), lw.temporal_pre_norm, eps, normed);
    EXPECT_EQ(MaxDiff(normed, store.Get(l, "temporal_normed")), 0.0);
    if (c.blocks[static_cast<size_t>(l)] == TemporalBlock::kRecurrent) {
      // The recurrence from the saved gates and the state before the chunk (zeros: a fresh
      // sequence) gives the saved output; a store that lost the document start would not.
      Tensor state = store.Get(l, "lru_state_before").Clone(),
             h = Tensor::Empty({T, lru}, DType::kF32);
      ops::RgLru(store.Get(l, "conv_output"), store.Get(l, "gate_x"), store.Get(l, "gate_a"),
                 lw.recurrent.recurrent_param, pos, state, h);
      EXPECT_EQ(MaxDiff(h, store.Get(l, "lru_output")), 0.0);
      Tensor gate_x = Tensor::Empty({T, lru}, DType::kF32);
      ops::BlockDiagonalMatMul(store.Get(l, "conv_output"), lw.recurrent.input_gate_weight,
                               lw.recurrent.input_gate_bias, gate_x);
      EXPECT_EQ(MaxDiff(gate_x, store.Get(l, "gate_x")), 0.0);
      EXPECT_FALSE(store.Has(l, "q"));
    } else {
      EXPECT_EQ(store.Get(l, "q").shape(), (Shape{T, c.num_heads * c.head_dim}));
      EXPECT_TRUE(store.Has(l, "attention_output"));
      EXPECT_FALSE(store.Has(l, "gate_x"));
    }
    // GeGLU: hidden = gelu(gate) * up, and the next layer's input is the MLP input plus
    // down(hidden) + bias.
    Tensor hidden = store.Get(l, "mlp_gate").Clone();
    ops::GeluTanh(hidden, hidden);
    ops::Mul(hidden, store.Get(l, "mlp_up"), hidden);
    EXPECT_EQ(MaxDiff(hidden, store.Get(l, "mlp_hidden")), 0.0);
    if (l + 1 < c.num_layers) {
      Tensor next = Tensor::Empty({T, c.hidden_size}, DType::kF32);
      LinearForward(store.Get(l, "mlp_hidden"), lw.down_proj, next, MatmulPrecision::kExact);
      ops::Add(store.Get(l, "mlp_input"), next, next);
      EXPECT_EQ(MaxDiff(next, store.Get(l + 1, ActivationStore::kInput)), 0.0);
    }
  }
  EXPECT_GT(store.bytes(), 0);

  ActivationStore inputs(ActivationStore::Keep::kLayerInputs);
  RecurrentGemmaState third(c, 1);
  model.set_activation_store(&inputs);
  model.Forward({0, tokens, pos}, third, true);
  EXPECT_EQ(inputs.size(), c.num_layers);
  EXPECT_EQ(MaxDiff(inputs.Get(2, ActivationStore::kInput), store.Get(2, ActivationStore::kInput)),
            0.0);
  EXPECT_THAT(ErrorOf([&] { inputs.Get(1, "gate_x"); }),
              testing::HasSubstr("layer 1 saved no 'gate_x' (the store keeps layer inputs only)"));
}

TEST(RecurrentGemmaConfig, PublishedSizesAndRoundTrip) {
  const RecurrentGemmaConfig two =
      LoadRecurrentGemmaConfigYaml("configs/models/recurrentgemma-2b.yaml");
  const RecurrentGemmaConfig nine =
      LoadRecurrentGemmaConfigYaml("configs/models/recurrentgemma-9b.yaml");
  // 2.7B and 9B as published (counted from MODEL_SPEC §4.1's shapes, tied embedding once).
  EXPECT_EQ(two.ParameterCount(), 2682862080);
  EXPECT_EQ(nine.ParameterCount(), 8579977216);
  EXPECT_EQ(two.blocks[2], TemporalBlock::kAttention);
  EXPECT_EQ(two.blocks[3], TemporalBlock::kRecurrent);
  EXPECT_EQ(two.EmbedScale(), 50.5f);  // sqrt(2560) = 50.596 rounded to bf16
  const RecurrentGemmaConfig back = RecurrentGemmaFromAttributes(ToAttributes(nine), "test");
  EXPECT_EQ(ToAttributes(back), ToAttributes(nine));
}

TEST(RecurrentGemmaConfig, BadYamlIsNamed) {
  EXPECT_THAT(
      ErrorOf([] { LoadRecurrentGemmaConfigYaml("tests/models/configs/rg-bad-block.yaml"); }),
      testing::HasSubstr("rg-bad-block.yaml:10:21: blocks[1]"));
  EXPECT_THAT(ErrorOf([] { LoadRecurrentGemmaConfigYaml("tests/models/configs/rg-bad-lru.yaml"); }),
              testing::HasSubstr("lru_width (70) must be a multiple of num_heads (3)"));
  Attributes a = ToAttributes(TinyConfig());
  a["architecture"] = std::string("gemma2");
  EXPECT_THAT(ErrorOf([&] { RecurrentGemmaFromAttributes(a, "m.h5"); }),
              testing::HasSubstr("m.h5: not a RecurrentGemma checkpoint (architecture 'gemma2')"));
}

}  // namespace
}  // namespace gemmapod
