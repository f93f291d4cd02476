#include "models/gemma/gemma_shard.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "models/shard_checksum.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"

namespace gemmapod {

std::optional<std::string> TensorParallelProblem(const ModelConfig& c, int tp) {
  if (tp < 1) return StrCat("tp must be at least 1, got ", tp);
  if (c.num_heads % tp != 0) {
    return StrCat("tp ", tp, " does not divide the ", c.num_heads, " query heads of ", c.name);
  }
  if (c.num_kv_heads % tp != 0 && tp % c.num_kv_heads != 0) {
    return StrCat("tp ", tp, " neither divides nor is a multiple of the ", c.num_kv_heads,
                  " key/value heads of ", c.name);
  }
  if (c.intermediate_size % tp != 0) {
    return StrCat("tp ", tp, " does not divide the MLP width ", c.intermediate_size, " of ",
                  c.name);
  }
  return std::nullopt;
}

GemmaShard MakeGemmaShard(const ModelConfig& c, int tp, int tp_rank, int64_t first_layer,
                          int64_t end_layer, bool has_embedding, bool has_head) {
  if (auto problem = TensorParallelProblem(c, tp)) throw Error(*problem);
  GEMMAPOD_CHECK(0 <= tp_rank && tp_rank < tp, "tp rank ", tp_rank, " outside [0, ", tp, ")");
  GEMMAPOD_CHECK(0 <= first_layer && first_layer <= end_layer && end_layer <= c.num_layers,
                 "layers [", first_layer, ", ", end_layer, ") outside the ", c.num_layers,
                 " layers of ", c.name);
  GemmaShard s;
  s.tp = tp;
  s.tp_rank = tp_rank;
  s.first_layer = first_layer;
  s.end_layer = end_layer;
  s.has_embedding = has_embedding;
  s.has_head = has_head;
  s.heads = c.num_heads / tp;
  if (c.num_kv_heads >= tp) {
    s.kv_heads = c.num_kv_heads / tp;
    s.kv_head_begin = tp_rank * s.kv_heads;
  } else {
    // Fewer key/value heads than ranks: the query heads of rank r all read head r*KV/tp.
    s.kv_heads = 1;
    s.kv_head_begin = tp_rank * c.num_kv_heads / tp;
  }
  s.ffn = c.intermediate_size / tp;
  // Rank r holds ids [r * vocab_rows, (r + 1) * vocab_rows); with a vocabulary smaller than the
  // padded one, the last ranks' rows may all be padding (vocab_valid 0).
  s.vocab_rows = (c.vocab_size + tp - 1) / tp;
  s.vocab_begin = tp_rank * s.vocab_rows;
  s.vocab_valid = std::clamp<int64_t>(c.vocab_size - s.vocab_begin, 0, s.vocab_rows);
  return s;
}

GemmaShard WholeGemma(const ModelConfig& config) {
  return MakeGemmaShard(config, 1, 0, 0, config.num_layers, true, true);
}

void ForEachShardParameter(
    const ModelConfig& c, const GemmaShard& s, GemmaWeights& weights,
    const std::function<void(const GemmaParameter&, const ParameterSlice&, Tensor&)>& fn) {
  const int64_t hd = c.head_dim;
  const ParameterSlice whole{};
  const ParameterSlice q_rows{0, s.tp_rank * s.heads * hd, (s.tp_rank + 1) * s.heads * hd,
                              (s.tp_rank + 1) * s.heads * hd};
  const ParameterSlice o_cols{1, q_rows.begin, q_rows.end, q_rows.end};
  const ParameterSlice kv_rows{0, s.kv_head_begin * hd, (s.kv_head_begin + s.kv_heads) * hd,
                               (s.kv_head_begin + s.kv_heads) * hd};
  const ParameterSlice ffn_rows{0, s.tp_rank * s.ffn, (s.tp_rank + 1) * s.ffn,
                                (s.tp_rank + 1) * s.ffn};
  const ParameterSlice down_cols{1, ffn_rows.begin, ffn_rows.end, ffn_rows.end};
  // The rows read from the file stop at the vocabulary; the rest of the shard is padding.
  const int64_t read_begin = std::min(s.vocab_begin, c.vocab_size);
  const ParameterSlice vocab_rows{0, read_begin, read_begin + s.vocab_valid,
                                  read_begin + s.vocab_rows};

  // The slice of a matrix's per-row scales follows its rows: split with a row split, whole with a
  // column split (every rank's columns are scaled by the same rows' scales).
  auto rows_of = [&](const ParameterSlice& matrix_slice) {
    return matrix_slice.dim == 0 ? matrix_slice : whole;
  };
  ForEachGemmaParameter(c, weights, [&](const GemmaParameter& p, Tensor& slot) {
    const std::string matrix = p.is_scale ? p.name.substr(0, p.name.size() - 6) : p.name;
    auto visit = [&](const ParameterSlice& matrix_slice) {
      fn(p, p.is_scale ? rows_of(matrix_slice) : matrix_slice, slot);
    };
    if (matrix == "model.embed_tokens.weight") {
      if (s.has_embedding || s.has_head) visit(vocab_rows);
      return;
    }
    if (p.name == "model.norm.weight" || matrix == "score.weight") {
      if (s.has_head) visit(whole);  // replicated over the last stage's ranks
      return;
    }
    // model.layers.<i>.<rest>
    const size_t dot = p.name.find('.', 13);
    const int64_t layer = std::stoll(p.name.substr(13, dot - 13));
    if (layer < s.first_layer || layer >= s.end_layer) return;
    const std::string rest = matrix.substr(dot + 1);
    if (rest == "self_attn.q_proj.weight") {
      visit(q_rows);
    } else if (rest == "self_attn.k_proj.weight" || rest == "self_attn.v_proj.weight") {
      visit(kv_rows);
    } else if (rest == "self_attn.o_proj.weight") {
      visit(o_cols);
    } else if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight") {
      visit(ffn_rows);
    } else if (rest == "mlp.down_proj.weight") {
      visit(down_cols);
    } else {
      GEMMAPOD_CHECK(p.is_norm, "sharding: no split rule for parameter '", p.name, "'");
      fn(p, whole, slot);
    }
  });
}

Shape SliceShape(const GemmaParameter& p, const ParameterSlice& slice) {
  Shape shape = p.shape;
  if (slice.dim >= 0) shape[static_cast<size_t>(slice.dim)] = slice.padded_end - slice.begin;
  return shape;
}

void CheckStoredDType(const ModelConfig& config, const GemmaParameter& p, const TensorInfo& info,
                      const std::string& origin) {
  const DType t = info.dtype;
  if (p.is_scale) {
    GEMMAPOD_CHECK(t == DType::kF32, origin, ": tensor '", p.name, "' is stored as ", DTypeName(t),
                   "; int8 scales must be f32");
  } else if (!p.is_norm && config.quantization == WeightQuantization::kInt8) {
    GEMMAPOD_CHECK(t == DType::kI8, origin, ": tensor '", p.name, "' is stored as ", DTypeName(t),
                   " in an int8 checkpoint; its matrices must be i8");
  } else {
    GEMMAPOD_CHECK(t == DType::kF32 || t == DType::kBF16, origin, ": tensor '", p.name,
                   "' is stored as ", DTypeName(t), "; weights must be f32 or bf16");
  }
}

void CheckTensorsAreExactly(const std::vector<GemmaParameter>& params, const ModelConfig& config,
                            const TensorSource& source, const std::string& tied_head,
                            const std::string& model) {
  std::set<std::string> expected;
  for (const GemmaParameter& p : params) {
    expected.insert(p.name);
    GEMMAPOD_CHECK(source.Has(p.name), source.origin(), ": tensor '", p.name, "' is missing (",
                   model, " needs it)");
    const TensorInfo info = source.Info(p.name);
    GEMMAPOD_CHECK(info.shape == p.shape, source.origin(), ": tensor '", p.name, "' has shape ",
                   ShapeToString(info.shape), " but the config needs ", ShapeToString(p.shape));
    CheckStoredDType(config, p, info, source.origin());
  }
  for (const TensorInfo& info : source.List()) {
    // A stored copy of the tied output head duplicates the embedding; anything else means the
    // file and the config disagree about the model.
    if (info.name == tied_head) continue;
    GEMMAPOD_CHECK(expected.count(info.name) == 1, source.origin(), ": unexpected tensor '",
                   info.name, "' (not a parameter of ", model, ")");
  }
}

Tensor ReadParameterSlice(const TensorSource& source, const GemmaParameter& p,
                          const ParameterSlice& slice, Communicator* tp) {
  const bool group_check = tp != nullptr && tp->size() > 1;
  // A rank reading a whole tensor checks the file's checksum of it; the ranks of a group that
  // read slices check it together (every rank of the group makes the same calls).
  const bool whole = slice.dim < 0 || (!group_check && slice.begin == 0 &&
                                       slice.end == p.shape[static_cast<size_t>(slice.dim)]);
  Tensor t =
      whole ? source.Read(p.name) : source.ReadSlice(p.name, slice.dim, slice.begin, slice.end);
  if (!whole && group_check) {
    if (const std::optional<uint32_t> crc = source.StoredCrc32(p.name)) {
      CheckSlicedChecksum(t, p.shape, slice.dim, slice.begin, slice.end, *crc, *tp,
                          StrCat(source.origin(), ": tensor '", p.name, "'"));
    }
  }
  if (slice.padded_end > slice.end) {
    // Vocabulary padding: the rows after the real ones are zeros (dim 0 only).
    Tensor padded = Tensor::Zeros(SliceShape(p, slice), t.dtype());
    if (t.nbytes() > 0) std::memcpy(padded.raw(), t.raw(), t.nbytes());
    t = std::move(padded);
  }
  return p.is_norm && t.dtype() != DType::kF32 ? t.To(DType::kF32) : std::move(t);
}

GemmaWeights LoadGemmaShard(const ModelConfig& config, const GemmaShard& shard,
                            const TensorSource& source, Communicator* tp) {
  // Every rank checks the whole file's names and shapes (metadata only), so a rank never loads a
  // slice of a tensor that another rank would find malformed.
  CheckTensorsAreExactly(GemmaParameters(config), config, source, "lm_head.weight",
                         StrCat("this ", ArchitectureName(config.architecture), " config"));

  GemmaWeights w;
  ForEachShardParameter(config, shard, w,
                        [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor& slot) {
                          slot = ReadParameterSlice(source, p, slice, tp);
                        });
  return w;
}

int64_t GemmaShardWeightBytes(const ModelConfig& config, const GemmaShard& shard,
                              int64_t matrix_bytes) {
  int64_t bytes = 0;
  GemmaWeights scratch;
  ForEachShardParameter(config, shard, scratch,
                        [&](const GemmaParameter& p, const ParameterSlice& slice, Tensor&) {
                          bytes += NumElements(SliceShape(p, slice)) *
                                   (p.is_norm || p.is_scale ? int64_t{4} : matrix_bytes);
                        });
  return bytes;
}

}  // namespace gemmapod
