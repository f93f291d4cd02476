#include "models/convert.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "models/gemma_weights.h"
#include "models/hf_config.h"
#include "models/model_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTokenizerFile = "tokenizer.model";

bool IsHfDirectory(const std::string& path) {
  return fs::is_directory(path) && fs::exists(fs::path(path) / "config.json");
}

bool IsOurs(const std::string& path) { return fs::path(path).extension() == ".h5"; }

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
  const std::vector<GemmaParameter> params = GemmaParameters(config);
  std::set<std::string> names;
  for (const GemmaParameter& p : params) {
    names.insert(p.name);
    GEMMAPOD_CHECK(source.Has(p.name), source.origin(), ": tensor '", p.name, "' is missing (a ",
                   ArchitectureName(config.architecture), " model with ", config.num_layers,
                   " layers needs it)");
    const TensorInfo info = source.Info(p.name);
    GEMMAPOD_CHECK(info.shape == p.shape, source.origin(), ": tensor '", p.name, "' has shape ",
                   ShapeToString(info.shape), " but the config needs ", ShapeToString(p.shape));
    GEMMAPOD_CHECK(info.dtype == DType::kF32 || info.dtype == DType::kBF16, source.origin(),
                   ": tensor '", p.name, "' is ", DTypeName(info.dtype),
                   "; weights must be f32, bf16 or f16");
  }
  for (const TensorInfo& info : source.List()) {
    if (info.name == "lm_head.weight") continue;  // tied to the embedding; dropped
    GEMMAPOD_CHECK(names.count(info.name) == 1, source.origin(), ": unexpected tensor '", info.name,
                   "' (not a parameter of this ", ArchitectureName(config.architecture),
                   " config)");
  }
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

// Streams every parameter from `source` to `writer` (either format's writer), one tensor in
// memory at a time, in the dtype asked for.
template <typename Writer>
void CopyParameters(const std::vector<GemmaParameter>& params, const TensorSource& source,
                    Writer& writer, const std::string& dtype, ConvertReport& report) {
  for (const GemmaParameter& p : params) {
    const Tensor t = ToTargetDType(source.Read(p.name), dtype);
    writer.Write(p.name, t);
    ++report.tensors;
    report.parameters += t.numel();
    report.bytes_written += static_cast<int64_t>(t.nbytes());
  }
}

ConvertReport HfToOurs(const std::string& dir, const std::string& dst,
                       const ConvertOptions& options) {
  const ModelConfig config = ReadHfConfig((fs::path(dir) / "config.json").string());
  const std::unique_ptr<TensorSource> source = OpenSafetensors(dir);
  const std::vector<GemmaParameter> params = CheckParameters(config, *source);

  ConvertReport report;
  report.model_type = ArchitectureName(config.architecture);
  Hdf5CheckpointWriter writer = Hdf5CheckpointWriter::Create(dst);
  writer.SetConfig(ToAttributes(config));
  CopyParameters(params, *source, writer, options.dtype, report);
  const fs::path tokenizer = fs::path(dir) / kTokenizerFile;
  if (fs::exists(tokenizer)) {
    writer.WriteFile(kTokenizerFile, ReadWholeFile(tokenizer));
    report.tokenizer_copied = true;
  }
  writer.Commit();
  return report;
}

ConvertReport OursToHf(const std::string& src, const std::string& dir,
                       const ConvertOptions& options) {
  const std::unique_ptr<Hdf5CheckpointReader> reader = Hdf5CheckpointReader::Open(src);
  const ModelConfig config = FromAttributes(reader->config(), src);
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
  GEMMAPOD_CHECK(fs::exists(source), source, ": no such file or directory");
  if (IsHfDirectory(source)) {
    GEMMAPOD_CHECK(IsOurs(destination), "convert: ", source,
                   " is a Hugging Face model; the destination must be a .h5 file, got ",
                   destination);
    GEMMAPOD_CHECK(options.overwrite || !fs::exists(destination), "convert: ", destination,
                   " already exists; pass --force to replace it");
    return HfToOurs(source, destination, options);
  }
  if (IsOurs(source)) {
    GEMMAPOD_CHECK(!IsOurs(destination), "convert: ", source, " is already a .h5 checkpoint; ",
                   "give a directory to write the Hugging Face model to");
    return OursToHf(source, destination, options);
  }
  throw Error(StrCat("convert: cannot tell the format of ", source,
                     ": expected a directory with config.json (Hugging Face) or a .h5 file"));
}

}  // namespace gemmapod
