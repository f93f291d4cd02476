// The decoder's own consistency: decoding token by token through the KV cache (with sliding layers
// wrapping their ring buffers many times), prefilling in chunks, and batching sequences of
// different lengths all give the logits of one full prefill. Agreement with the reference
// implementation itself is checked by the golden tests.
#include "models/gemma/gemma_decoder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "models/gemma/gemma_random.h"
#include "runtime/error.h"
#include "runtime/ops/ops.h"

namespace gemmapod {
namespace {

ModelConfig TinyConfig(Architecture arch) {
  ModelConfig c;
  c.name = "tiny";
  c.architecture = arch;
  c.vocab_size = 96;
  c.hidden_size = 32;
  c.num_layers = arch == Architecture::kGemma3Text ? 6 : 3;
  c.num_heads = 4;
  c.num_kv_heads = arch == Architecture::kGemma2 ? 2 : 1;
  c.head_dim = 12;
  c.intermediate_size = 48;
  c.query_pre_attn_scalar = 10;
  c.layer_kinds = DefaultLayerKinds(arch, c.num_layers);
  if (arch != Architecture::kGemma) {
    c.sliding_window = 5;
    c.post_norms = true;
  }
  if (arch == Architecture::kGemma2) {
    c.attn_logit_softcap = 2.0;
    c.final_logit_softcap = 4.0;
  }
  if (arch == Architecture::kGemma3Text) {
    c.qk_norm = true;
    c.rope_theta_global = 1e6;
    c.embed_scale_rounding = EmbedScaleRounding::kWeightDType;
  }
  c.max_position_embeddings = 128;
  Validate(c, "tiny");
  return c;
}

std::vector<int32_t> RandomTokens(int64_t n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_int_distribution<int32_t> id(3, 95);
  std::vector<int32_t> t{2};
  while (static_cast<int64_t>(t.size()) < n) t.push_back(id(rng));
  return t;
}

// max |a - b| / max |b| over two logit tensors of the same shape.
double RelativeError(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(a.data<float>()[i] - b.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::abs(b.data<float>()[i])));
  }
  return diff / scale;
}

Tensor RowsOf(const Tensor& t, int64_t begin, int64_t end) { return t.Slice(begin, end).Clone(); }

struct Case {
  Architecture arch;
  DType weights;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << ArchitectureName(c.arch) << "/" << DTypeName(c.weights);
}

class GemmaDecoderTest : public ::testing::TestWithParam<Case> {
 protected:
  // Decode runs the GEMV kernels and prefill the GEMM ones, which sum in different orders: f32
  // weights agree to a few ulps, bf16 weights to the 2^-16 of the split-activation products.
  double Tolerance() const { return GetParam().weights == DType::kF32 ? 5e-6 : 6e-5; }

  GemmaDecoder MakeDecoder() const {
    const ModelConfig c = TinyConfig(GetParam().arch);
    return GemmaDecoder(c, RandomGemmaWeights(c, GetParam().weights, 7));
  }
};

TEST_P(GemmaDecoderTest, StepByStepDecodeEqualsFullPrefill) {
  GemmaDecoder model = MakeDecoder();
  const std::vector<int32_t> tokens = RandomTokens(40, 1);  // 8 windows of 5
  KvCache full_cache(model.config(), 1, 64);
  const Tensor full =
      model.Forward({{SequenceChunk{0, tokens}}}, full_cache, LogitRows::kAllTokens);
  KvCache cache(model.config(), 1, 64);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const Tensor step =
        model.Forward({{SequenceChunk{0, {tokens[i]}}}}, cache, LogitRows::kLastToken);
    const int64_t r = static_cast<int64_t>(i);
    EXPECT_LT(RelativeError(step, RowsOf(full, r, r + 1)), Tolerance()) << "position " << i;
  }
  EXPECT_EQ(cache.length(0), 40);
}

TEST_P(GemmaDecoderTest, ChunkedPrefillEqualsFullPrefill) {
  GemmaDecoder model = MakeDecoder();
  const std::vector<int32_t> tokens = RandomTokens(33, 2);
  KvCache full_cache(model.config(), 1, 64);
  const Tensor full =
      model.Forward({{SequenceChunk{0, tokens}}}, full_cache, LogitRows::kAllTokens);
  KvCache cache(model.config(), 1, 64);
  int64_t begin = 0;
  for (int64_t size : {3, 7, 1, 12, 10}) {  // chunks longer and shorter than the window
    std::vector<int32_t> chunk(tokens.begin() + begin, tokens.begin() + begin + size);
    const Tensor part = model.Forward({{SequenceChunk{0, chunk}}}, cache, LogitRows::kAllTokens);
    EXPECT_LT(RelativeError(part, RowsOf(full, begin, begin + size)), Tolerance())
        << "chunk at " << begin;
    begin += size;
  }
}

TEST_P(GemmaDecoderTest, RaggedBatchEqualsEachSequenceAlone) {
  GemmaDecoder model = MakeDecoder();
  const std::vector<std::vector<int32_t>> seqs = {RandomTokens(17, 3), RandomTokens(4, 4),
                                                  RandomTokens(11, 5)};
  std::vector<Tensor> alone;
  for (const auto& s : seqs) {
    KvCache cache(model.config(), 1, 64);
    alone.push_back(model.Forward({{SequenceChunk{0, s}}}, cache, LogitRows::kAllTokens));
  }
  // Sequences sit in slots 2, 0, 1 of one cache: slots are independent of batch order.
  KvCache cache(model.config(), 3, 64);
  std::vector<SequenceChunk> batch = {{2, seqs[0]}, {0, seqs[1]}, {1, seqs[2]}};
  const Tensor all = model.Forward(batch, cache, LogitRows::kAllTokens);
  EXPECT_LT(RelativeError(RowsOf(all, 0, 17), alone[0]), Tolerance());
  EXPECT_LT(RelativeError(RowsOf(all, 17, 21), alone[1]), Tolerance());
  EXPECT_LT(RelativeError(RowsOf(all, 21, 32), alone[2]), Tolerance());
  // Then one decode step for all three at their different positions.
  std::vector<SequenceChunk> step = {{2, {9}}, {0, {10}}, {1, {11}}};
  const Tensor next = model.Forward(step, cache, LogitRows::kLastToken);
  ASSERT_EQ(next.dim(0), 3);
  for (size_t s = 0; s < 3; ++s) {
    KvCache single(model.config(), 1, 64);
    std::vector<int32_t> extended = seqs[s];
    extended.push_back(step[s].tokens[0]);
    const Tensor ref = model.Forward({{SequenceChunk{0, extended}}}, single, LogitRows::kLastToken);
    const int64_t r = static_cast<int64_t>(s);
    EXPECT_LT(RelativeError(RowsOf(next, r, r + 1), ref), Tolerance()) << "sequence " << s;
  }
}

// A forward given an activation store saves each layer's intermediates, which chain: the
// attention norm of a layer's input, the residual after attention (through the post-norm where
// the family has one), the GeGLU product and the next layer's input. Saving changes no logit.
TEST_P(GemmaDecoderTest, AnActivationStoreKeepsEachLayersIntermediates) {
  GemmaDecoder model = MakeDecoder();
  const ModelConfig& c = model.config();
  const std::vector<int32_t> tokens = RandomTokens(9, 5);
  KvCache plain_cache(c, 1, 16), stored_cache(c, 1, 16);
  const Tensor plain =
      model.Forward({{SequenceChunk{0, tokens}}}, plain_cache, LogitRows::kAllTokens);
  ActivationStore store;
  model.set_activation_store(&store);
  const Tensor stored =
      model.Forward({{SequenceChunk{0, tokens}}}, stored_cache, LogitRows::kAllTokens);
  model.set_activation_store(nullptr);
  EXPECT_EQ(RelativeError(stored, plain), 0.0);

  const float eps = static_cast<float>(c.rms_norm_eps);
  const auto same = [](const Tensor& a, const Tensor& b) { return RelativeError(a, b) == 0.0; };
  const auto residual = [&](const Tensor& input, const Tensor& block_out, const Tensor* post_norm) {
    Tensor out = block_out.Clone();
    if (post_norm != nullptr) ops::RmsNorm(out, *post_norm, eps, out);
    ops::Add(input, out, out);
    return out;
  };
  for (int64_t l = 0; l < c.num_layers; ++l) {
    SCOPED_TRACE(testing::Message() << "layer " << l);
    const GemmaLayerWeights& w = model.weights().layers[static_cast<size_t>(l)];
    const Tensor& input = store.Get(l, ActivationStore::kInput);
    Tensor normed = input.Clone();
    ops::RmsNorm(input, w.attn_norm, eps, normed);
    EXPECT_TRUE(same(normed, store.Get(l, "attention_normed")));
    EXPECT_EQ(store.Get(l, "q").shape(), (Shape{9, c.num_heads * c.head_dim}));
    EXPECT_TRUE(same(residual(input, store.Get(l, "attention_block_output"),
                              c.post_norms ? &w.post_attn_norm : nullptr),
                     store.Get(l, "mlp_input")));
    Tensor hidden = store.Get(l, "mlp_gate").Clone();
    ops::GeluTanh(hidden, hidden);
    ops::Mul(hidden, store.Get(l, "mlp_up"), hidden);
    EXPECT_TRUE(same(hidden, store.Get(l, "mlp_hidden")));
    if (l + 1 < c.num_layers) {
      EXPECT_TRUE(same(residual(store.Get(l, "mlp_input"), store.Get(l, "mlp_block_output"),
                                c.post_norms ? &w.post_mlp_norm : nullptr),
                       store.Get(l + 1, ActivationStore::kInput)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, GemmaDecoderTest,
                         ::testing::Values(Case{Architecture::kGemma, DType::kF32},
                                           Case{Architecture::kGemma2, DType::kF32},
                                           Case{Architecture::kGemma2, DType::kBF16},
                                           Case{Architecture::kGemma3Text, DType::kF32},
                                           Case{Architecture::kGemma3Text, DType::kBF16}),
                         [](const auto& info) {
                           return StrCat(ArchitectureName(info.param.arch), "_",
                                         DTypeName(info.param.weights));
                         });

class KvCacheBlockTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(KvCacheBlockTest, SlidingLayersHoldOnlyTheirWindow) {
  const ModelConfig c = TinyConfig(Architecture::kGemma2);  // window 5; layers 0, 2 sliding
  const size_t row_bytes = 2 * 2 * 12 * sizeof(float);      // keys + values, 2 kv heads x 12
  const int64_t B = GetParam();
  auto blocks = [&](int64_t rows) { return static_cast<size_t>((rows + B - 1) / B * B); };
  KvCache small(c, 1, 16, c.num_kv_heads, 0, c.num_layers, Device::Cpu(), B);
  KvCache large(c, 1, 128, c.num_kv_heads, 0, c.num_layers, Device::Cpu(), B);
  // A chunk reads back window - 1 = 4 positions before it writes: a ring of 4 rows, in blocks.
  const size_t ring = std::min(blocks(4), blocks(16));
  EXPECT_EQ(small.LayerBytes(0), ring * row_bytes);
  EXPECT_EQ(large.LayerBytes(0), blocks(4) * row_bytes);  // does not grow with the context
  EXPECT_EQ(large.LayerBytes(2), blocks(4) * row_bytes);
  EXPECT_EQ(small.LayerBytes(1), blocks(16) * row_bytes);  // a global layer holds the context
  EXPECT_EQ(large.LayerBytes(1), blocks(128) * row_bytes);
  EXPECT_EQ(large.bytes(), (2 * blocks(4) + blocks(128)) * row_bytes);
  EXPECT_EQ(large.bytes(), KvCache::BytesFor(c, 1, 128, c.num_kv_heads, 0, c.num_layers, B));

  // Generating far past the window leaves the memory as it was and the logits right, one token
  // at a time and in chunks longer than the ring.
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 3));
  const size_t before = large.bytes();
  const std::vector<int32_t> tokens = RandomTokens(100, 9);
  Tensor last;
  for (int32_t t : tokens) {
    last = model.Forward({{SequenceChunk{0, {t}}}}, large, LogitRows::kLastToken);
  }
  EXPECT_EQ(large.bytes(), before);
  EXPECT_EQ(large.length(0), 100);
  KvCache fresh(c, 1, 128, c.num_kv_heads, 0, c.num_layers, Device::Cpu(), B);
  Tensor chunked;
  for (int64_t at = 0; at < 100; at += 23) {
    chunked = model.Forward(
        {{SequenceChunk{0,
                        {tokens.begin() + at, tokens.begin() + std::min<int64_t>(at + 23, 100)}}}},
        fresh, LogitRows::kLastToken);
  }
  KvCache whole(c, 1, 128);
  const Tensor full = model.Forward({{SequenceChunk{0, tokens}}}, whole, LogitRows::kLastToken);
  EXPECT_LT(RelativeError(last, full), 5e-6);  // 20 windows later, the ring still serves right
  EXPECT_LT(RelativeError(chunked, full), 5e-6);
}

INSTANTIATE_TEST_SUITE_P(BlockTokens, KvCacheBlockTest, ::testing::Values(1, 4, 16),
                         [](const auto& info) { return StrCat("B", info.param); });

TEST(KvCacheTest, ContextOverflowIsAnError) {
  const ModelConfig c = TinyConfig(Architecture::kGemma);
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 3));
  KvCache cache(c, 1, 8);
  model.Forward({{SequenceChunk{0, RandomTokens(6, 1)}}}, cache, LogitRows::kLastToken);
  try {
    model.Forward({{SequenceChunk{0, RandomTokens(3, 1)}}}, cache, LogitRows::kLastToken);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "context full: sequence 0 holds 6 tokens and 3 more do not fit in max_context 8");
  }
  EXPECT_EQ(cache.length(0), 6);  // the failed call changed nothing
}

TEST(GemmaDecoderInputTest, TokenOutsideTheVocabularyIsAnError) {
  const ModelConfig c = TinyConfig(Architecture::kGemma);
  GemmaDecoder model(c, RandomGemmaWeights(c, DType::kF32, 3));
  KvCache cache(c, 1, 8);
  EXPECT_THROW(model.Forward({{SequenceChunk{0, {2, 96}}}}, cache, LogitRows::kLastToken), Error);
  EXPECT_THROW(
      model.Forward({{SequenceChunk{0, {2}}, SequenceChunk{0, {3}}}}, cache, LogitRows::kLastToken),
      Error);
}

}  // namespace
}  // namespace gemmapod
