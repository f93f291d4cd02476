#include "models/import/recurrent_gemma_deepmind.h"

#include <map>
#include <set>

#include "runtime/error.h"

namespace gemmapod {
namespace {

// How one of our tensors is made from DeepMind's.
struct Origin {
  std::string name;  // DeepMind's tensor
  enum Kind { kSame, kConvTaps, kUpBranch, kUpBias } kind = kSame;
  int branch = 0;  // ffw_up index: 0 gate (GELU), 1 up
};

class DeepMindSource final : public TensorSource {
 public:
  DeepMindSource(std::unique_ptr<TensorSource> inner, std::map<std::string, Origin> origins,
                 std::map<std::string, Shape> shapes)
      : inner_(std::move(inner)), origins_(std::move(origins)), shapes_(std::move(shapes)) {}

  const std::string& origin() const override { return inner_->origin(); }
  std::vector<TensorInfo> List() const override {
    std::vector<TensorInfo> out;
    for (const auto& [name, o] : origins_) out.push_back(Info(name));
    return out;
  }
  bool Has(const std::string& name) const override { return origins_.count(name) > 0; }
  TensorInfo Info(const std::string& name) const override {
    const Origin& o = Find(name);
    return {name, shapes_.at(name), inner_->Info(o.name).dtype};
  }
  Tensor Read(const std::string& name) const override {
    const Origin& o = Find(name);
    const Tensor t = inner_->Read(o.name);
    const Shape shape = shapes_.at(name);
    switch (o.kind) {
      case Origin::kSame:
        return t;
      case Origin::kConvTaps:  // [width, lru] -> [lru, 1, width]
        return Transposed(t, t.dim(0), t.dim(1), shape);
      case Origin::kUpBranch: {  // [2, d, ffn] -> branch^T [ffn, d]
        const int64_t d = t.dim(1), ffn = t.dim(2);
        const Tensor branch = t.Slice(o.branch, o.branch + 1).Clone();
        return Transposed(branch.Reshape({d, ffn}), d, ffn, shape);
      }
      case Origin::kUpBias:  // [2, 1, 1, ffn] -> [ffn]
        return t.Slice(o.branch, o.branch + 1).Clone().Reshape(shape);
    }
    return t;
  }
  Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const override {
    const Tensor whole = Read(name);
    GEMMAPOD_CHECK(dim == 0, origin(), ": tensor '", name, "': only row slices are supported");
    return whole.Slice(begin, end).Clone();
  }

 private:
  const Origin& Find(const std::string& name) const {
    const auto it = origins_.find(name);
    GEMMAPOD_CHECK(it != origins_.end(), origin(), ": no tensor maps to '", name, "'");
    return it->second;
  }
  // [rows, cols] -> [cols, rows] viewed as `shape`, in the input's dtype.
  static Tensor Transposed(const Tensor& t, int64_t rows, int64_t cols, const Shape& shape) {
    const Tensor f = t.dtype() == DType::kF32 ? t : t.To(DType::kF32);
    Tensor out = Tensor::Zeros({cols, rows}, DType::kF32);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        out.data<float>()[c * rows + r] = f.data<float>()[r * cols + c];
      }
    }
    Tensor shaped = out.Reshape(shape);
    return t.dtype() == DType::kF32 ? shaped : shaped.To(t.dtype());
  }

  std::unique_ptr<TensorSource> inner_;
  std::map<std::string, Origin> origins_;
  std::map<std::string, Shape> shapes_;
};

}  // namespace

bool IsDeepMindRecurrentGemma(const TensorSource& source) {
  return source.Has("embedder.input_embedding");
}

DeepMindRecurrentGemma OpenDeepMindRecurrentGemma(std::unique_ptr<TensorSource> source,
                                                  const RecurrentGemmaConfig* given) {
  const std::string where = source->origin();
  GEMMAPOD_CHECK(IsDeepMindRecurrentGemma(*source), where,
                 ": not a DeepMind RecurrentGemma state dict (no 'embedder.input_embedding')");
  RecurrentGemmaConfig c;
  c.name = "recurrentgemma";
  const Shape embed = source->Info("embedder.input_embedding").shape;
  GEMMAPOD_CHECK(embed.size() == 2, where, ": 'embedder.input_embedding' must be 2-D");
  c.vocab_size = embed[0];
  c.hidden_size = embed[1];
  while (source->Has(StrCat("blocks.", c.num_layers, ".temporal_pre_norm.scale"))) ++c.num_layers;
  GEMMAPOD_CHECK(c.num_layers > 0, where, ": no 'blocks.0.temporal_pre_norm.scale'");
  auto shape_of = [&](const std::string& name, size_t rank) {
    GEMMAPOD_CHECK(source->Has(name), where, ": tensor '", name, "' is missing");
    const Shape shape = source->Info(name).shape;
    GEMMAPOD_CHECK(shape.size() == rank, where, ": tensor '", name, "' has shape ",
                   ShapeToString(shape), "; expected ", rank, " dimensions");
    return shape;
  };
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string block = StrCat("blocks.", i, ".");
    const bool recurrent = source->Has(block + "recurrent_block.linear_x.weight");
    GEMMAPOD_CHECK(recurrent || source->Has(block + "attention_block.proj_q.weight"), where,
                   ": layer ", i, " has neither '", block, "recurrent_block.linear_x.weight' nor '",
                   block, "attention_block.proj_q.weight'");
    c.blocks.push_back(recurrent ? TemporalBlock::kRecurrent : TemporalBlock::kAttention);
    if (recurrent && c.lru_width == 0) {
      const std::string p = StrCat("blocks.", i, ".recurrent_block.");
      c.lru_width = shape_of(p + "rg_lru.a_param", 1)[0];
      c.num_heads = shape_of(p + "rg_lru.input_gate.w", 3)[0];
      c.conv1d_width = shape_of(p + "conv_1d.w", 2)[0];
    }
    if (!recurrent && c.head_dim == 0) {
      const std::string p = StrCat("blocks.", i, ".attention_block.");
      const Shape k = shape_of(p + "proj_k.weight", 2);
      const Shape q = shape_of(p + "proj_q.weight", 2);
      c.head_dim = k.at(0);  // one key/value head
      c.num_kv_heads = 1;
      if (c.num_heads == 0) c.num_heads = q.at(0) / c.head_dim;
    }
  }
  c.intermediate_size = shape_of("blocks.0.mlp_block.ffw_up.w", 3)[2];
  if (c.head_dim == 0) c.head_dim = c.hidden_size / c.num_heads;
  if (c.lru_width == 0) c.lru_width = c.hidden_size;
  Validate(c, where);
  if (given != nullptr) c = *given;  // the tensors are checked against it below

  // The tensors our layout derives (transposed, split) must have exactly DeepMind's shapes; a
  // transposed tensor with the right element count would otherwise load scrambled.
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string block = StrCat("blocks.", i, ".");
    auto expect = [&](const std::string& name, const Shape& want) {
      GEMMAPOD_CHECK(source->Has(name), where, ": tensor '", name, "' is missing (layer ", i,
                     " of the config is a ", TemporalBlockName(c.blocks[static_cast<size_t>(i)]),
                     " block)");
      const Shape got = source->Info(name).shape;
      GEMMAPOD_CHECK(got == want, where, ": tensor '", name, "' has shape ", ShapeToString(got),
                     " but the config needs ", ShapeToString(want));
    };
    if (c.blocks[static_cast<size_t>(i)] == TemporalBlock::kRecurrent) {
      expect(block + "recurrent_block.conv_1d.w", {c.conv1d_width, c.lru_width});
    }
    expect(block + "mlp_block.ffw_up.w", {2, c.hidden_size, c.intermediate_size});
    expect(block + "mlp_block.ffw_up.b", {2, 1, 1, c.intermediate_size});
  }

  std::map<std::string, Origin> origins;
  std::map<std::string, Shape> shapes;
  auto same = [&](const std::string& ours, const std::string& theirs) {
    origins[ours] = {theirs};
    shapes[ours] = source->Info(theirs).shape;
  };
  same("model.embed_tokens.weight", "embedder.input_embedding");
  same("model.final_norm.weight", "final_norm.scale");
  const int64_t lru = c.lru_width, ffn = c.intermediate_size, d = c.hidden_size;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string ours = StrCat("model.layers.", i, "."), theirs = StrCat("blocks.", i, ".");
    same(ours + "temporal_pre_norm.weight", theirs + "temporal_pre_norm.scale");
    same(ours + "channel_pre_norm.weight", theirs + "channel_pre_norm.scale");
    const std::string t = ours + "temporal_block.";
    if (c.blocks[static_cast<size_t>(i)] == TemporalBlock::kRecurrent) {
      const std::string r = theirs + "recurrent_block.";
      for (const char* lin : {"linear_x", "linear_y", "linear_out"}) {
        same(t + lin + ".weight", r + lin + ".weight");
        same(t + lin + ".bias", r + lin + ".bias");
      }
      origins[t + "conv_1d.weight"] = {r + "conv_1d.w", Origin::kConvTaps};
      shapes[t + "conv_1d.weight"] = {lru, 1, c.conv1d_width};
      same(t + "conv_1d.bias", r + "conv_1d.b");
      same(t + "rg_lru.recurrent_param", r + "rg_lru.a_param");
      same(t + "rg_lru.input_gate_weight", r + "rg_lru.input_gate.w");
      same(t + "rg_lru.input_gate_bias", r + "rg_lru.input_gate.b");
      same(t + "rg_lru.recurrent_gate_weight", r + "rg_lru.a_gate.w");
      same(t + "rg_lru.recurrent_gate_bias", r + "rg_lru.a_gate.b");
    } else {
      const std::string a = theirs + "attention_block.";
      same(t + "q_proj.weight", a + "proj_q.weight");
      same(t + "k_proj.weight", a + "proj_k.weight");
      same(t + "v_proj.weight", a + "proj_v.weight");
      same(t + "o_proj.weight", a + "proj_final.weight");
      same(t + "o_proj.bias", a + "proj_final.bias");
    }
    const std::string m = ours + "mlp_block.", up = theirs + "mlp_block.ffw_up.";
    origins[m + "gate_proj.weight"] = {up + "w", Origin::kUpBranch, 0};
    origins[m + "up_proj.weight"] = {up + "w", Origin::kUpBranch, 1};
    origins[m + "gate_proj.bias"] = {up + "b", Origin::kUpBias, 0};
    origins[m + "up_proj.bias"] = {up + "b", Origin::kUpBias, 1};
    shapes[m + "gate_proj.weight"] = shapes[m + "up_proj.weight"] = {ffn, d};
    shapes[m + "gate_proj.bias"] = shapes[m + "up_proj.bias"] = {ffn};
    same(m + "down_proj.weight", theirs + "mlp_block.ffw_down.weight");
    same(m + "down_proj.bias", theirs + "mlp_block.ffw_down.bias");
  }
  // Every DeepMind tensor must be used: a name we do not map means a model we do not know.
  std::set<std::string> used;
  for (const auto& [name, o] : origins) used.insert(o.name);
  for (const TensorInfo& info : source->List()) {
    GEMMAPOD_CHECK(used.count(info.name) == 1, where, ": unexpected tensor '", info.name,
                   "' (not part of a DeepMind RecurrentGemma state dict)");
  }
  DeepMindRecurrentGemma out;
  out.config = c;
  out.tensors =
      std::make_unique<DeepMindSource>(std::move(source), std::move(origins), std::move(shapes));
  return out;
}

}  // namespace gemmapod
