#include "models/import/gguf_gemma.h"

#include <map>

#include "runtime/checkpoint/gguf.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

// GGUF's per-layer tensor names and ours. Gemma 1's norm in front of the MLP is Hugging Face's
// "post_attention_layernorm"; Gemma 2/3 use that name for the norm after attention.
const std::map<std::string, std::string>& LayerNames(Architecture a) {
  static const std::map<std::string, std::string> common = {
      {"attn_norm.weight", "input_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},
      {"attn_q_norm.weight", "self_attn.q_norm.weight"},
      {"attn_k_norm.weight", "self_attn.k_norm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},
      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  static const std::map<std::string, std::string> gemma1 = [] {
    auto m = common;
    m["ffn_norm.weight"] = "post_attention_layernorm.weight";
    return m;
  }();
  static const std::map<std::string, std::string> gemma2 = [] {
    auto m = common;
    m["post_attention_norm.weight"] = "post_attention_layernorm.weight";
    m["ffn_norm.weight"] = "pre_feedforward_layernorm.weight";
    m["post_ffw_norm.weight"] = "post_feedforward_layernorm.weight";
    return m;
  }();
  return a == Architecture::kGemma ? gemma1 : gemma2;
}

bool IsNormName(const std::string& hf_name) {
  return hf_name.size() >= 11 && hf_name.compare(hf_name.size() - 11, 11, "norm.weight") == 0;
}

// The file's tensors under our names. llama.cpp's converters store every Gemma RMSNorm weight as
// 1 + w (its RMSNorm multiplies by the weight, Gemma's by 1 + weight); reading subtracts the 1.
class GemmaGgufSource final : public TensorSource {
 public:
  GemmaGgufSource(std::shared_ptr<const GgufFile> file, Architecture architecture)
      : file_(file), inner_(GgufTensorSource(file)) {
    for (const GgufTensorInfo& t : file->tensors()) {
      const std::string ours = GemmaNameForGgufTensor(t.name, architecture);
      GEMMAPOD_CHECK(gguf_name_.emplace(ours, t.name).second, file->path(), ": tensors '", t.name,
                     "' and '", gguf_name_[ours], "' both map to '", ours, "'");
    }
  }

  const std::string& origin() const override { return file_->path(); }

  std::vector<TensorInfo> List() const override {
    std::vector<TensorInfo> out;
    for (const auto& [ours, theirs] : gguf_name_) out.push_back(Info(ours));
    return out;
  }
  bool Has(const std::string& name) const override { return gguf_name_.count(name) > 0; }
  TensorInfo Info(const std::string& name) const override {
    TensorInfo info = inner_->Info(GgufName(name));
    info.name = name;
    return info;
  }
  Tensor Read(const std::string& name) const override {
    return Unshift(name, inner_->Read(GgufName(name)));
  }
  Tensor ReadSlice(const std::string& name, int dim, int64_t begin, int64_t end) const override {
    return Unshift(name, inner_->ReadSlice(GgufName(name), dim, begin, end));
  }

 private:
  const std::string& GgufName(const std::string& name) const {
    const auto it = gguf_name_.find(name);
    GEMMAPOD_CHECK(it != gguf_name_.end(), file_->path(), ": no tensor maps to '", name, "'");
    return it->second;
  }
  static Tensor Unshift(const std::string& name, Tensor t) {
    if (IsNormName(name)) {
      float* v = t.data<float>();
      for (int64_t i = 0; i < t.numel(); ++i) v[i] -= 1.0f;
    }
    return t;
  }

  std::shared_ptr<const GgufFile> file_;
  std::unique_ptr<TensorSource> inner_;
  std::map<std::string, std::string> gguf_name_;  // ours -> GGUF's
};

Architecture GgufArchitecture(const GgufFile& f) {
  const std::string arch = f.String("general.architecture");
  if (arch == "gemma") return Architecture::kGemma;
  if (arch == "gemma2") return Architecture::kGemma2;
  if (arch == "gemma3") return Architecture::kGemma3Text;
  throw Error(StrCat(f.path(), ": key 'general.architecture' is '", arch,
                     "'; gemmapod reads Gemma GGUF files (gemma, gemma2, gemma3)"));
}

}  // namespace

std::string GemmaNameForGgufTensor(const std::string& name, Architecture architecture) {
  if (name == "token_embd.weight") return "model.embed_tokens.weight";
  if (name == "output_norm.weight") return "model.norm.weight";
  // An untied head (llama.cpp's Gemma 3 converter keeps a checkpoint's lm_head.weight): gemmapod's
  // Gemma ties it to the embedding and drops it, as it drops lm_head.weight from safetensors.
  if (name == "output.weight") return "lm_head.weight";
  if (name.rfind("blk.", 0) != 0) return name;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4) return name;
  const std::string layer = name.substr(4, dot - 4);
  if (layer.find_first_not_of("0123456789") != std::string::npos) return name;
  const auto& names = LayerNames(architecture);
  const auto it = names.find(name.substr(dot + 1));
  if (it == names.end()) return name;
  return StrCat("model.layers.", layer, ".", it->second);
}

ModelConfig GemmaConfigFromGguf(const GgufFile& f) {
  ModelConfig c;
  c.architecture = GgufArchitecture(f);
  const std::string arch = f.String("general.architecture");
  auto key = [&](const char* k) { return StrCat(arch, ".", k); };
  auto int_or = [&](const std::string& k, int64_t fallback) {
    return f.Has(k) ? f.Int(k) : fallback;
  };
  auto float_or = [&](const std::string& k, double fallback) {
    return f.Has(k) ? f.Float(k) : fallback;
  };
  c.name = f.Has("general.name") ? f.String("general.name") : arch;
  c.vocab_size = static_cast<int64_t>(f.StringArray("tokenizer.ggml.tokens").size());
  c.hidden_size = f.Int(key("embedding_length"));
  c.num_layers = f.Int(key("block_count"));
  GEMMAPOD_CHECK(f.Value(key("feed_forward_length")).type != GgufValueType::kArray, f.path(),
                 ": key '", key("feed_forward_length"),
                 "' lists a width per layer; Gemma's layers share one");
  c.intermediate_size = f.Int(key("feed_forward_length"));
  c.num_heads = f.Int(key("attention.head_count"));
  c.num_kv_heads = int_or(key("attention.head_count_kv"), c.num_heads);
  c.head_dim =
      int_or(key("attention.key_length"), c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  GEMMAPOD_CHECK(int_or(key("attention.value_length"), c.head_dim) == c.head_dim, f.path(),
                 ": key '", key("attention.value_length"), "' differs from the key length ",
                 c.head_dim);
  c.rms_norm_eps = float_or(key("attention.layer_norm_rms_epsilon"), 1e-6);
  c.max_position_embeddings = int_or(key("context_length"), 8192);
  c.rope_theta_global = float_or(key("rope.freq_base"), 10000);
  // Gemma 3's sliding layers use base 10000 whatever the global base; GGUF files do not store it
  // (llama.cpp hard-codes it), newer ones may as rope.freq_base_swa.
  c.rope_theta_local = c.architecture == Architecture::kGemma3Text
                           ? float_or(key("rope.freq_base_swa"), 10000)
                           : c.rope_theta_global;
  if (f.Has(key("rope.scaling.type"))) {
    const std::string type = f.String(key("rope.scaling.type"));
    GEMMAPOD_CHECK(type == "none" || type == "linear", f.path(), ": key '",
                   key("rope.scaling.type"), "' is '", type, "' (none and linear are supported)");
    if (type == "linear") c.rope_scaling_global = f.Float(key("rope.scaling.factor"));
  }
  if (c.architecture != Architecture::kGemma) {
    // Gemma 2 files from older converters lack the key; llama.cpp then uses the released 4096.
    c.sliding_window = c.architecture == Architecture::kGemma2
                           ? int_or(key("attention.sliding_window"), 4096)
                           : f.Int(key("attention.sliding_window"));
    c.post_norms = true;
  }
  c.layer_kinds = DefaultLayerKinds(c.architecture, c.num_layers);
  if (c.architecture == Architecture::kGemma2) {
    c.attn_logit_softcap = float_or(key("attn_logit_softcapping"), 50);
    c.final_logit_softcap = float_or(key("final_logit_softcapping"), 30);
  }
  if (c.architecture == Architecture::kGemma3Text) {
    c.qk_norm = true;
    c.embed_scale_rounding = EmbedScaleRounding::kWeightDType;
  }
  // GGUF does not store the attention scale. The references use head_dim, except the 27B
  // models, whose scale is hidden_size / num_heads (144 for Gemma 2, 168 for Gemma 3); llama.cpp
  // makes the same exception by model size.
  const bool is_27b = (c.architecture == Architecture::kGemma2 && c.hidden_size == 4608) ||
                      (c.architecture == Architecture::kGemma3Text && c.hidden_size == 5376);
  c.query_pre_attn_scalar = static_cast<double>(is_27b ? c.hidden_size / c.num_heads : c.head_dim);
  c.bos_id = static_cast<int32_t>(int_or("tokenizer.ggml.bos_token_id", 2));
  c.eos_id = static_cast<int32_t>(int_or("tokenizer.ggml.eos_token_id", 1));
  c.pad_id = static_cast<int32_t>(int_or("tokenizer.ggml.padding_token_id", 0));
  Validate(c, f.path());
  return c;
}

SentencePieceVocabulary GemmaVocabularyFromGguf(const GgufFile& f) {
  const std::string model = f.String("tokenizer.ggml.model");
  GEMMAPOD_CHECK(model == "llama", f.path(), ": key 'tokenizer.ggml.model' is '", model,
                 "'; Gemma's tokenizer is SentencePiece ('llama')");
  SentencePieceVocabulary v;
  v.algorithm = SentencePieceVocabulary::Algorithm::kBpe;
  v.pieces = f.StringArray("tokenizer.ggml.tokens");
  const size_t n = v.pieces.size();
  const std::vector<double>& scores = f.FloatArray("tokenizer.ggml.scores");
  const std::vector<int64_t>& types = f.IntArray("tokenizer.ggml.token_type");
  GEMMAPOD_CHECK(scores.size() == n && types.size() == n, f.path(), ": ", n, " tokens but ",
                 scores.size(), " scores and ", types.size(), " token types");
  // The converter writes the id only when tokenizer.json or config.json names it (llama.cpp loads
  // files without it); the unknown piece is then the one typed UNKNOWN, or spelled <unk>.
  v.unk_id = -1;
  if (f.Has("tokenizer.ggml.unknown_token_id")) {
    v.unk_id = static_cast<int32_t>(f.Int("tokenizer.ggml.unknown_token_id"));
  } else {
    for (size_t id = 0; id < n && v.unk_id < 0; ++id) {
      if (types[id] == static_cast<int64_t>(PieceType::kUnknown))
        v.unk_id = static_cast<int32_t>(id);
    }
    for (size_t id = 0; id < n && v.unk_id < 0; ++id) {
      if (v.pieces[id] == "<unk>") v.unk_id = static_cast<int32_t>(id);
    }
    GEMMAPOD_CHECK(v.unk_id >= 0, f.path(),
                   ": no key 'tokenizer.ggml.unknown_token_id' and no piece of type UNKNOWN or "
                   "spelled <unk>");
  }
  v.bos_id = static_cast<int32_t>(f.Int("tokenizer.ggml.bos_token_id"));
  v.eos_id = static_cast<int32_t>(f.Int("tokenizer.ggml.eos_token_id"));
  v.pad_id = f.Has("tokenizer.ggml.padding_token_id")
                 ? static_cast<int32_t>(f.Int("tokenizer.ggml.padding_token_id"))
                 : -1;
  // Gemma never prepends a space (llama.cpp's default for SentencePiece files is to).
  v.add_dummy_prefix =
      f.Has("tokenizer.ggml.add_space_prefix") && f.Bool("tokenizer.ggml.add_space_prefix");
  v.split_digits = true;
  const std::string space = "\xE2\x96\x81";  // U+2581
  for (size_t id = 0; id < n; ++id) {
    v.scores.push_back(static_cast<float>(scores[id]));
    GEMMAPOD_CHECK(types[id] >= 1 && types[id] <= 6, f.path(), ": token ", id, " '", v.pieces[id],
                   "' has token type ", types[id], " (1 to 6)");
    auto type = static_cast<PieceType>(types[id]);
    const auto i = static_cast<int32_t>(id);
    if (i == v.unk_id) {
      // llama.cpp's converter files <unk> with the control pieces.
      type = PieceType::kUnknown;
    } else if (type == PieceType::kControl && i != v.bos_id && i != v.eos_id && i != v.pad_id) {
      // The converter marks every "special" added token as control, which SentencePiece never
      // matches in text. Gemma's tokenizers match <start_of_turn>, <mask>, <unusedN> and the like
      // where the text spells them, as user-defined pieces; only BOS, EOS and padding are control.
      // (Chat prompts keep user text from forging turns with Tokenizer::EncodeLiteral.)
      type = PieceType::kUserDefined;
    }
    if (type == PieceType::kUserDefined) {
      // The converter writes user-defined pieces with plain spaces; SentencePiece matches them
      // after turning spaces into U+2581.
      std::string& p = v.pieces[id];
      for (size_t at = p.find(' '); at != std::string::npos; at = p.find(' ', at + space.size())) {
        p.replace(at, 1, space);
      }
    }
    if (type == PieceType::kByte) v.byte_fallback = true;
    v.types.push_back(type);
  }
  return v;
}

GgufGemma OpenGgufGemma(const std::string& path) {
  auto file = std::make_shared<const GgufFile>(path);
  GgufGemma g;
  g.config = GemmaConfigFromGguf(*file);
  g.tokenizer_model = SerializeSentencePieceModel(GemmaVocabularyFromGguf(*file), path);
  g.tensors = std::make_unique<GemmaGgufSource>(file, g.config.architecture);
  return g;
}

}  // namespace gemmapod
