// How one rank's part of a decoder-only Gemma is cut (Megatron's splits):
//
//   q_proj, k_proj, v_proj, gate_proj, up_proj   column-parallel: rows (output features) split
//   o_proj, down_proj                            row-parallel: columns (input features) split
//   embed_tokens (also the tied output head)      vocab-parallel: rows split, padded to tp
//   norms                                         replicated
//
// so each attention and MLP block ends in one all-reduce of a partial sum. Query heads split
// evenly; key/value heads split when there are at least tp of them, and otherwise each rank keeps
// the one key/value head its query heads read (Gemma 1 2B and Gemma 3 have a single one). A
// pipeline stage holds a contiguous range of layers; the first stage holds the embedding, the
// last the final norm and the output head (the same table, tied).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "models/gemma/gemma_weights.h"

namespace gemmapod {

class Communicator;

struct GemmaShard {
  int tp = 1;
  int tp_rank = 0;
  int64_t first_layer = 0;  // this stage's layers: [first_layer, end_layer)
  int64_t end_layer = 0;
  bool has_embedding = true;  // first stage
  bool has_head = true;       // last stage

  // Derived by MakeGemmaShard.
  int64_t heads = 0;          // query heads held
  int64_t kv_heads = 0;       // key/value heads held
  int64_t kv_head_begin = 0;  // the first of them, among the model's
  int64_t ffn = 0;            // MLP width held
  int64_t vocab_rows = 0;     // embedding rows held, padding included (equal on every rank)
  int64_t vocab_begin = 0;    // the first row's token id
  int64_t vocab_valid = 0;    // rows that are real tokens; rows past them are zero padding
};

// Why `config` cannot be split over `tp` ranks, or nothing when it can.
std::optional<std::string> TensorParallelProblem(const ModelConfig& config, int tp);

// Rank `tp_rank` of `tp`, running layers [first_layer, end_layer). Throws gemmapod::Error with
// the reason when the split cannot work.
GemmaShard MakeGemmaShard(const ModelConfig& config, int tp, int tp_rank, int64_t first_layer,
                          int64_t end_layer, bool has_embedding, bool has_head);
// The whole model on one rank.
GemmaShard WholeGemma(const ModelConfig& config);

// Which part of a parameter a shard holds: all of it (dim -1), or [begin, end) along `dim`.
// Rows past `end` up to `padded_end` are zeros (the vocabulary padding).
struct ParameterSlice {
  int dim = -1;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t padded_end = 0;
};

// Calls fn(parameter, slice, slot) for every parameter `shard` holds, in checkpoint order.
void ForEachShardParameter(
    const ModelConfig& config, const GemmaShard& shard, GemmaWeights& weights,
    const std::function<void(const GemmaParameter&, const ParameterSlice&, Tensor&)>& fn);

// The shape a slice has in memory.
Shape SliceShape(const GemmaParameter& parameter, const ParameterSlice& slice);

// Reads the shard's slices from `source` (hyperslab reads where the format has them), after
// checking every tensor's name and shape against the config as LoadGemmaWeights does. Tensors
// read whole have their stored checksums checked; with `tp` (this rank's tensor-parallel group,
// collective over it) so have the tensors its ranks read in slices (models/shard_checksum.h).
GemmaWeights LoadGemmaShard(const ModelConfig& config, const GemmaShard& shard,
                            const TensorSource& source, Communicator* tp = nullptr);

// Checks that `source` holds exactly `params` with their shapes and a dtype `config` allows
// (its quantization), before anything is read: errors name the origin, the tensor and `model`
// ("this gemma2 config"). A tensor named `tied_head` (a stored copy of the tied output head) is
// accepted and ignored.
void CheckTensorsAreExactly(const std::vector<GemmaParameter>& params, const ModelConfig& config,
                            const TensorSource& source, const std::string& tied_head,
                            const std::string& model);

// One parameter's slice from `source`, as a shard holds it: the stored checksum checked (by this
// rank for a whole tensor; with `tp`, collectively over the group for slices), vocabulary padding
// added, norms widened to f32.
Tensor ReadParameterSlice(const TensorSource& source, const GemmaParameter& parameter,
                          const ParameterSlice& slice, Communicator* tp);

// Why `info` cannot hold parameter `p` of `config` (its stored dtype), as an Error naming `origin`.
void CheckStoredDType(const ModelConfig& config, const GemmaParameter& p, const TensorInfo& info,
                      const std::string& origin);

// Bytes of the shard's weights when matrices take `matrix_bytes` per element (norms and int8
// scales are f32).
int64_t GemmaShardWeightBytes(const ModelConfig& config, const GemmaShard& shard,
                              int64_t matrix_bytes);

}  // namespace gemmapod
