#include "models/recurrent_gemma/recurrent_gemma_shard.h"

#include <cstring>

#include "runtime/error.h"

namespace gemmapod {
namespace {

// [begin, end) along `dim` of `t` (f32 or bf16), as a new tensor.
Tensor Cut(const Tensor& t, int dim, int64_t begin, int64_t end) {
  if (dim == 0) return t.Slice(begin, end).Clone();
  // dim 1 of a 2-D tensor: every row's columns [begin, end).
  const int64_t rows = t.dim(0), cols = t.dim(1), n = end - begin;
  const size_t elem = DTypeSize(t.dtype());
  Tensor out = Tensor::Zeros({rows, n}, t.dtype());
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(out.raw()) + r * n * elem,
                static_cast<const char*>(t.raw()) + (r * cols + begin) * elem, n * elem);
  }
  return out;
}

// How the shard cuts parameter `name` of layer `layer` (-1: not a layer's): dim and range, or
// dim -1 for whole; nullopt when the shard does not hold it.
struct Cutting {
  int dim = -1;
  int64_t begin = 0, end = 0;
};

std::optional<Cutting> CuttingOf(const RecurrentGemmaConfig& c, const RecurrentGemmaShard& s,
                                 const std::string& name) {
  const int r = s.tp_rank;
  if (name == "model.embed_tokens.weight") {
    if (!s.has_embedding && !s.has_head) return std::nullopt;
    return Cutting{0, s.vocab_begin, s.vocab_begin + s.vocab_rows};
  }
  if (name == "model.final_norm.weight") {
    if (!s.has_head) return std::nullopt;
    return Cutting{};
  }
  const size_t dot = name.find('.', 13);
  const int64_t layer = std::stoll(name.substr(13, dot - 13));
  if (layer < s.first_layer || layer >= s.end_layer) return std::nullopt;
  const std::string rest = name.substr(dot + 1);
  auto ends = [&](const char* tail) {
    const size_t n = std::strlen(tail);
    return rest.size() >= n && rest.compare(rest.size() - n, n, tail) == 0;
  };
  const Cutting lru_rows{0, r * s.lru, (r + 1) * s.lru};
  const Cutting head_blocks{0, r * s.heads, (r + 1) * s.heads};
  const Cutting ffn_rows{0, r * s.ffn, (r + 1) * s.ffn};
  const int64_t q = s.heads * c.head_dim;
  if (rest.find("linear_x.") != std::string::npos || rest.find("linear_y.") != std::string::npos ||
      rest.find("conv_1d.") != std::string::npos || ends("recurrent_param")) {
    return lru_rows;
  }
  if (ends("gate_weight") || ends("gate_bias")) return head_blocks;
  if (ends("linear_out.weight")) return Cutting{1, r * s.lru, (r + 1) * s.lru};
  if (ends("q_proj.weight")) return Cutting{0, r * q, (r + 1) * q};
  if (ends("o_proj.weight")) return Cutting{1, r * q, (r + 1) * q};
  if (rest.find("gate_proj.") != std::string::npos || rest.find("up_proj.") != std::string::npos) {
    return ffn_rows;
  }
  if (ends("down_proj.weight")) return Cutting{1, r * s.ffn, (r + 1) * s.ffn};
  // Norms, the replicated key/value projections, and the row-parallel layers' biases.
  return Cutting{};
}

}  // namespace

std::optional<std::string> RecurrentTensorParallelProblem(const RecurrentGemmaConfig& c, int tp) {
  if (tp < 1) return StrCat("tensor parallelism must be at least 1, got ", tp);
  if (c.num_heads % tp != 0) {
    return StrCat(c.name, ": tp ", tp, " does not divide its ", c.num_heads,
                  " heads (attention heads and RG-LRU gate blocks split together)");
  }
  if (c.intermediate_size % tp != 0) {
    return StrCat(c.name, ": tp ", tp, " does not divide its MLP width ", c.intermediate_size);
  }
  if (c.vocab_size % tp != 0) {
    return StrCat(c.name, ": tp ", tp, " does not divide its vocabulary of ", c.vocab_size);
  }
  return std::nullopt;
}

RecurrentGemmaShard MakeRecurrentGemmaShard(const RecurrentGemmaConfig& c, int tp, int tp_rank,
                                            int64_t first_layer, int64_t end_layer,
                                            bool has_embedding, bool has_head) {
  if (auto problem = RecurrentTensorParallelProblem(c, tp)) throw Error(*problem);
  GEMMAPOD_CHECK(tp_rank >= 0 && tp_rank < tp, "tp rank ", tp_rank, " of ", tp);
  GEMMAPOD_CHECK(0 <= first_layer && first_layer <= end_layer && end_layer <= c.num_layers,
                 "layers [", first_layer, ", ", end_layer, ") of a ", c.num_layers, "-layer model");
  RecurrentGemmaShard s;
  s.tp = tp;
  s.tp_rank = tp_rank;
  s.first_layer = first_layer;
  s.end_layer = end_layer;
  s.has_embedding = has_embedding;
  s.has_head = has_head;
  s.heads = c.num_heads / tp;
  s.lru = c.lru_width / tp;
  s.ffn = c.intermediate_size / tp;
  s.vocab_rows = c.vocab_size / tp;
  s.vocab_begin = tp_rank * s.vocab_rows;
  return s;
}

std::optional<ParameterSlice> RecurrentGemmaSliceOf(const RecurrentGemmaConfig& c,
                                                    const RecurrentGemmaShard& s,
                                                    const std::string& name) {
  const std::optional<Cutting> cut = CuttingOf(c, s, name);
  if (!cut) return std::nullopt;
  return ParameterSlice{cut->dim, cut->begin, cut->end, cut->end};
}

RecurrentGemmaShard WholeRecurrentGemma(const RecurrentGemmaConfig& c) {
  return MakeRecurrentGemmaShard(c, 1, 0, 0, c.num_layers, true, true);
}

int64_t RecurrentGemmaShardWeightBytes(const RecurrentGemmaConfig& c, const RecurrentGemmaShard& s,
                                       int64_t matrix_bytes) {
  int64_t bytes = 0;
  for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(c)) {
    const std::optional<Cutting> cut = CuttingOf(c, s, p.name);
    if (!cut) continue;
    Shape shape = p.shape;
    if (cut->dim >= 0) shape[static_cast<size_t>(cut->dim)] = cut->end - cut->begin;
    const bool matrix = IsRecurrentGemmaMatrix(p);
    bytes += NumElements(shape) * (matrix ? matrix_bytes : 4);
  }
  return bytes;
}

RecurrentGemmaWeights SliceRecurrentGemmaWeights(const RecurrentGemmaConfig& c,
                                                 const RecurrentGemmaShard& s,
                                                 RecurrentGemmaWeights whole) {
  RecurrentGemmaWeights out;
  std::vector<Tensor*> sources;
  ForEachRecurrentGemmaParameter(
      c, whole, [&](const RecurrentGemmaParameter&, Tensor& slot) { sources.push_back(&slot); });
  size_t i = 0;
  ForEachRecurrentGemmaParameter(c, out, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    const Tensor& t = *sources[i++];
    const std::optional<Cutting> cut = CuttingOf(c, s, p.name);
    if (!cut) return;
    slot = cut->dim < 0 ? t : Cut(t, cut->dim, cut->begin, cut->end);
  });
  return out;
}

RecurrentGemmaWeights LoadRecurrentGemmaShard(const RecurrentGemmaConfig& c,
                                              const RecurrentGemmaShard& s,
                                              const TensorSource& source) {
  // Every rank checks the whole file's names, shapes and dtypes (metadata only), then reads the
  // tensors it holds part of whole, which checks their stored checksums, and keeps its cut.
  CheckRecurrentGemmaTensors(c, source);
  RecurrentGemmaWeights out;
  ForEachRecurrentGemmaParameter(c, out, [&](const RecurrentGemmaParameter& p, Tensor& slot) {
    const std::optional<Cutting> cut = CuttingOf(c, s, p.name);
    if (!cut) return;
    Tensor t = source.Read(p.name);
    const bool matrix = IsRecurrentGemmaMatrix(p);
    if (!matrix && t.dtype() != DType::kF32) t = t.To(DType::kF32);
    slot = cut->dim < 0 ? std::move(t) : Cut(t, cut->dim, cut->begin, cut->end);
  });
  return out;
}

}  // namespace gemmapod
