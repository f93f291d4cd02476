#include "models/import/convert.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "models/gemma/gemma_shard.h"
#include "models/gemma/gemma_weights.h"
#include "models/gemma/model_config.h"
#include "models/import/gguf_gemma.h"
#include "models/import/hf_config.h"
#include "models/import/recurrent_gemma_deepmind.h"
#include "models/recurrent_gemma/recurrent_gemma_weights.h"
#include "models/t5gemma/t5gemma_weights.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/cpu/int8_matmul.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTokenizerFile = "tokenizer.model";

bool IsHfDirectory(const std::string& path) {
  return fs::is_directory(path) && fs::exists(fs::path(path) / "config.json");
}

bool IsOurs(const std::string& path) { return fs::path(path).extension() == ".h5"; }

bool IsGguf(const std::string& path) { return fs::path(path).extension() == ".gguf"; }

// The dtype a tensor is written in, given what it was read as.
Tensor ToTargetDType(Tensor t, const std::string& dtype) {
  if (dtype == "keep") return t;
  const DType want = dtype == "bf16" ? DType::kBF16 : DType::kF32;
  return t.dtype() == want ? t : t.To(want);
}

DType TargetDType(DType stored, const std::string& dtype) {
  if (dtype == "keep") return stored;
  return dtype == "bf16" ? DType::kBF16 : DType::kF32;
}

// Checks that `source` holds exactly the parameters `config` needs, with the right shapes and
// dtypes, before a single byte is written.
std::vector<GemmaParameter> CheckParameters(const ModelConfig& config, const TensorSource& source) {
  std::vector<GemmaParameter> params = GemmaParameters(config);
  // A stored lm_head.weight is the tied embedding again; it is dropped.
  CheckTensorsAreExactly(params, config, source, "lm_head.weight",
                         StrCat("a ", ArchitectureName(config.architecture), " model with ",
                                config.num_layers, " layers"));
  return params;
}

std::string ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  GEMMAPOD_CHECK(in.good(), path.string(), ": cannot open");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void WriteWholeFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  GEMMAPOD_CHECK(out.good(), path.string(), ": write failed");
}

// A source tensor, refused when it holds a NaN or infinity: a model with one computes nothing but
// NaN, and no checksum catches a value that was written that way.
Tensor ReadFinite(const TensorSource& source, const std::string& name) {
  Tensor t = source.Read(name);
  const int64_t at = FirstNonFinite(t);
  GEMMAPOD_CHECK(at < 0, "convert: ", source.origin(), ": tensor '", name, "' ",
                 ShapeToString(t.shape()), " holds a NaN or infinity at element ", at,
                 "; refusing to write a model that would compute NaN");
  return t;
}

// Streams every parameter from `source` to `writer` (either format's writer), one tensor in
// memory at a time, in the dtype asked for.
template <typename Writer>
void CopyParameters(const std::vector<GemmaParameter>& params, const TensorSource& source,
                    Writer& writer, const std::string& dtype, ConvertReport& report) {
  for (const GemmaParameter& p : params) {
    const Tensor t =
        p.is_scale ? ReadFinite(source, p.name) : ToTargetDType(ReadFinite(source, p.name), dtype);
    writer.Write(p.name, t);
    ++report.tensors;
    report.parameters += p.is_scale ? 0 : t.numel();
    report.bytes_written += static_cast<int64_t>(t.nbytes());
  }
}

// Writes matrix `name` as int8 rows and their f32 scales, quantized from the source's values.
void WriteInt8Matrix(const std::string& name, const Tensor& stored, Hdf5CheckpointWriter& writer,
                     ConvertReport& report) {
  const Tensor w = stored.dtype() == DType::kF32 ? stored : stored.To(DType::kF32);
  const int64_t rows = w.dim(0), cols = w.dim(1);
  Tensor q = Tensor::Zeros({rows, cols}, DType::kI8);
  Tensor scale = Tensor::Zeros({rows}, DType::kF32);
  cpu::QuantizeRowsInt8(w.data<float>(), rows, cols, q.data<int8_t>(), scale.data<float>());
  writer.Write(name, q);
  writer.Write(name + "_scale", scale);
  report.tensors += 2;
  report.parameters += q.numel();
  report.bytes_written += static_cast<int64_t>(q.nbytes() + scale.nbytes());
}

// Writes `params` (checked against `source` already) from `source`, the config `attributes` and
// the tokenizer into a new .h5; with int8, every matrix as int8 rows and their scales.
ConvertReport WriteCheckpoint(const std::vector<GemmaParameter>& params,
                              const Attributes& attributes, const TensorSource& source,
                              const std::optional<std::string>& tokenizer, const std::string& dst,
                              const ConvertOptions& options) {
  const bool int8 = options.quantize == "int8";
  ConvertReport report;
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(dst);
  writer.SetConfig(attributes);
  if (int8) {
    for (const GemmaParameter& p : params) {
      if (p.is_norm) {
        CopyParameters({p}, source, writer, options.dtype, report);
      } else {
        WriteInt8Matrix(p.name, ReadFinite(source, p.name), writer, report);
      }
    }
  } else {
    CopyParameters(params, source, writer, options.dtype, report);
  }
  if (tokenizer) {
    writer.WriteFile(kTokenizerFile, *tokenizer);
    report.tokenizer_copied = true;
  }
  writer.Commit();
  return report;
}

// Writes `config`'s parameters from `source` (checked first) and the tokenizer into a new .h5.
ConvertReport WriteOurs(const ModelConfig& config, const TensorSource& source,
                        const std::optional<std::string>& tokenizer, const std::string& dst,
                        const ConvertOptions& options) {
  const std::vector<GemmaParameter> params = CheckParameters(config, source);
  const bool int8 = options.quantize == "int8";
  GEMMAPOD_CHECK(!int8 || config.quantization == WeightQuantization::kNone,
                 "convert: ", source.origin(), " is already quantized");
  ModelConfig written = config;
  if (int8) written.quantization = WeightQuantization::kInt8;
  ConvertReport report =
      WriteCheckpoint(params, ToAttributes(written), source, tokenizer, dst, options);
  report.model_type = ArchitectureName(config.architecture);
  return report;
}

// T5Gemma: both stacks and the cross-attention checked against the config, then written as
// `dtype` and `quantize` say.
ConvertReport WriteT5Gemma(const T5GemmaConfig& config, const TensorSource& source,
                           const std::optional<std::string>& tokenizer, const std::string& dst,
                           const ConvertOptions& options) {
  CheckT5GemmaTensors(config, source);
  const bool int8 = options.quantize == "int8";
  GEMMAPOD_CHECK(!int8 || config.decoder.quantization == WeightQuantization::kNone,
                 "convert: ", source.origin(), " is already quantized");
  T5GemmaConfig written = config;
  if (int8) {
    written.encoder.quantization = WeightQuantization::kInt8;
    written.decoder.quantization = WeightQuantization::kInt8;
  }
  ConvertReport report = WriteCheckpoint(T5GemmaParameters(config), ToAttributes(written), source,
                                         tokenizer, dst, options);
  report.model_type = "t5gemma";
  return report;
}

// The config's model_type, or "" when it has none (ReadHfConfig then reports what is wrong).
std::string ModelType(const fs::path& config_json) {
  std::ifstream in(config_json);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("model_type") || !j["model_type"].is_string()) return "";
  return j["model_type"].get<std::string>();
}

// RecurrentGemma: every parameter checked against the config, then copied as `dtype` says.
ConvertReport WriteRecurrentGemma(const RecurrentGemmaConfig& config, const TensorSource& source,
                                  const std::optional<std::string>& tokenizer,
                                  const std::string& dst, const ConvertOptions& options) {
  GEMMAPOD_CHECK(options.quantize == "none",
                 "convert: --quantize int8 is not available for RecurrentGemma yet");
  CheckRecurrentGemmaTensors(config, source);
  ConvertReport report;
  report.model_type = "recurrent_gemma";
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(dst);
  writer.SetConfig(ToAttributes(config));
  for (const RecurrentGemmaParameter& p : RecurrentGemmaParameters(config)) {
    const Tensor t = ToTargetDType(ReadFinite(source, p.name), options.dtype);
    writer.Write(p.name, t);
    ++report.tensors;
    report.parameters += t.numel();
    report.bytes_written += static_cast<int64_t>(t.nbytes());
  }
  if (tokenizer) {
    writer.WriteFile(kTokenizerFile, *tokenizer);
    report.tokenizer_copied = true;
  }
  writer.Commit();
  return report;
}

std::optional<std::string> TokenizerBeside(const fs::path& dir) {
  const fs::path path = dir / kTokenizerFile;
  if (!fs::exists(path)) return std::nullopt;
  return ReadWholeFile(path);
}

// DeepMind's RecurrentGemma state dict in one .safetensors file (a tokenizer.model beside it is
// embedded too).
ConvertReport DeepMindToOurs(const std::string& file, const std::string& dst,
                             const ConvertOptions& options) {
  std::optional<RecurrentGemmaConfig> given;
  if (!options.config_path.empty()) given = LoadRecurrentGemmaConfigYaml(options.config_path);
  DeepMindRecurrentGemma dm =
      OpenDeepMindRecurrentGemma(OpenSafetensors(file), given ? &*given : nullptr);
  return WriteRecurrentGemma(dm.config, *dm.tensors, TokenizerBeside(fs::path(file).parent_path()),
                             dst, options);
}

ConvertReport HfToOurs(const std::string& dir, const std::string& dst,
                       const ConvertOptions& options) {
  if (ModelType(fs::path(dir) / "config.json") == "t5gemma") {
    const T5GemmaConfig config = ReadHfT5GemmaConfig((fs::path(dir) / "config.json").string());
    return WriteT5Gemma(config, *OpenSafetensors(dir), TokenizerBeside(dir), dst, options);
  }
  if (ModelType(fs::path(dir) / "config.json") == "recurrent_gemma") {
    const RecurrentGemmaConfig config =
        ReadHfRecurrentGemmaConfig((fs::path(dir) / "config.json").string());
    return WriteRecurrentGemma(config, *OpenSafetensors(dir), TokenizerBeside(dir), dst, options);
  }
  const ModelConfig config = ReadHfConfig((fs::path(dir) / "config.json").string());
  const std::unique_ptr<TensorSource> source = OpenSafetensors(dir);
  const fs::path tokenizer_path = fs::path(dir) / kTokenizerFile;
  std::optional<std::string> tokenizer;
  if (fs::exists(tokenizer_path)) tokenizer = ReadWholeFile(tokenizer_path);
  return WriteOurs(config, *source, tokenizer, dst, options);
}

ConvertReport GgufToOurs(const std::string& path, const std::string& dst,
                         const ConvertOptions& options) {
  const GgufGemma gguf = OpenGgufGemma(path);
  ConvertReport report = WriteOurs(gguf.config, *gguf.tensors, gguf.tokenizer_model, dst, options);
  report.model_type = StrCat("GGUF ", ArchitectureName(gguf.config.architecture));
  return report;
}

ConvertReport T5GemmaToHf(const std::string& src, const Hdf5CheckpointReader& reader,
                          const std::string& dir, const ConvertOptions& options) {
  const T5GemmaConfig config = T5GemmaFromAttributes(reader.config(), src);
  GEMMAPOD_CHECK(config.decoder.quantization == WeightQuantization::kNone, "convert: ", src,
                 " holds int8 weights, which Hugging Face checkpoints of this model do not "
                 "store; export the f32 or bf16 checkpoint it was quantized from");
  CheckT5GemmaTensors(config, reader);
  const std::vector<GemmaParameter> params = T5GemmaParameters(config);
  std::vector<TensorInfo> planned;
  DType written = DType::kF32;
  for (const GemmaParameter& p : params) {
    const TensorInfo info = reader.Info(p.name);
    planned.push_back({p.name, info.shape, TargetDType(info.dtype, options.dtype)});
    if (p.name == "model.decoder.embed_tokens.weight") written = planned.back().dtype;
  }
  ConvertReport report;
  report.model_type = "t5gemma";
  SafetensorsWriter writer(dir, planned, options.max_shard_bytes);
  CopyParameters(params, reader, writer, options.dtype, report);
  const fs::path staging = writer.staging_dir();
  WriteWholeFile(staging / "config.json",
                 T5GemmaHfConfigJson(config, written == DType::kBF16 ? "bfloat16" : "float32"));
  if (reader.HasFile(kTokenizerFile)) {
    WriteWholeFile(staging / kTokenizerFile, reader.ReadFile(kTokenizerFile));
    report.tokenizer_copied = true;
  }
  writer.Commit();
  return report;
}

ConvertReport OursToHf(const std::string& src, const std::string& dir,
                       const ConvertOptions& options) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(src);
  if (IsT5GemmaAttributes(reader->config())) return T5GemmaToHf(src, *reader, dir, options);
  const ModelConfig config = FromAttributes(reader->config(), src);
  GEMMAPOD_CHECK(config.quantization == WeightQuantization::kNone, "convert: ", src,
                 " holds int8 weights, which Hugging Face checkpoints of this model do not "
                 "store; export the f32 or bf16 checkpoint it was quantized from");
  const std::vector<GemmaParameter> params = CheckParameters(config, *reader);

  std::vector<TensorInfo> planned;
  DType written = DType::kF32;
  for (const GemmaParameter& p : params) {
    const TensorInfo info = reader->Info(p.name);
    planned.push_back({p.name, info.shape, TargetDType(info.dtype, options.dtype)});
    if (p.name == "model.embed_tokens.weight") written = planned.back().dtype;
  }
  ConvertReport report;
  report.model_type = ArchitectureName(config.architecture);
  SafetensorsWriter writer(dir, planned, options.max_shard_bytes);
  CopyParameters(params, *reader, writer, options.dtype, report);
  const fs::path staging = writer.staging_dir();
  WriteWholeFile(staging / "config.json",
                 HfConfigJson(config, written == DType::kBF16 ? "bfloat16" : "float32"));
  if (reader->HasFile(kTokenizerFile)) {
    WriteWholeFile(staging / kTokenizerFile, reader->ReadFile(kTokenizerFile));
    report.tokenizer_copied = true;
  }
  writer.Commit();
  return report;
}

}  // namespace

ConvertReport Convert(const std::string& source, const std::string& destination,
                      const ConvertOptions& options) {
  GEMMAPOD_CHECK(options.dtype == "keep" || options.dtype == "bf16" || options.dtype == "f32",
                 "convert: --dtype must be keep, bf16 or f32, got '", options.dtype, "'");
  GEMMAPOD_CHECK(options.quantize == "none" || options.quantize == "int8",
                 "convert: --quantize must be none or int8, got '", options.quantize, "'");
  GEMMAPOD_CHECK(options.config_path.empty() || fs::path(source).extension() == ".safetensors",
                 "convert: --config applies to a state dict (.safetensors) without a config; ",
                 source, " carries its own");
  GEMMAPOD_CHECK(fs::exists(source), source, ": no such file or directory");
  if (IsHfDirectory(source)) {
    GEMMAPOD_CHECK(IsOurs(destination), "convert: ", source,
                   " is a Hugging Face model; the destination must be a .h5 file, got ",
                   destination);
    GEMMAPOD_CHECK(options.overwrite || !fs::exists(destination), "convert: ", destination,
                   " already exists; pass --force to replace it");
    return HfToOurs(source, destination, options);
  }
  if (fs::path(source).extension() == ".safetensors") {
    GEMMAPOD_CHECK(IsOurs(destination), "convert: ", source,
                   " is a state dict; the destination must be a .h5 file, got ", destination);
    GEMMAPOD_CHECK(options.overwrite || !fs::exists(destination), "convert: ", destination,
                   " already exists; pass --force to replace it");
    return DeepMindToOurs(source, destination, options);
  }
  if (IsGguf(source)) {
    GEMMAPOD_CHECK(IsOurs(destination), "convert: ", source,
                   " is a GGUF file; the destination must be a .h5 file, got ", destination);
    GEMMAPOD_CHECK(options.overwrite || !fs::exists(destination), "convert: ", destination,
                   " already exists; pass --force to replace it");
    return GgufToOurs(source, destination, options);
  }
  if (IsOurs(source)) {
    GEMMAPOD_CHECK(options.quantize == "none",
                   "convert: --quantize applies when writing a .h5 "
                   "checkpoint (from a Hugging Face directory or a GGUF file)");
    GEMMAPOD_CHECK(!IsOurs(destination), "convert: ", source, " is already a .h5 checkpoint; ",
                   "give a directory to write the Hugging Face model to");
    return OursToHf(source, destination, options);
  }
  throw Error(StrCat("convert: cannot tell the format of ", source,
                     ": expected a directory with config.json (Hugging Face), a .gguf file or a "
                     ".h5 file"));
}

}  // namespace gemmapod
