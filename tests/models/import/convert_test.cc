// gemmapod convert: round trips HF -> .h5 -> HF -> .h5 keep every tensor bit for bit, and bad input
// (missing tensor, wrong shape, truncated file, unknown model_type, bad config) fails with a
// message naming the file and tensor and leaves nothing behind.
#include "models/import/convert.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "models/gemma/gemma_checkpoint.h"
#include "models/gemma/gemma_random.h"
#include "models/import/hf_config.h"
#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/error.h"
#include "tests/small_gemma_config.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

ModelConfig TinyGemma2() {
  ModelConfig c = SmallGemma2Config("tiny", {64, 16, 2, 2, 1, 8, 24});
  c.attn_logit_softcap = 50;
  c.final_logit_softcap = 30;
  return c;
}

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / StrCat("convert-test-", getpid(), "-",
                                               ::testing::UnitTest::GetInstance()->random_seed(),
                                               "-", counter_++);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A Hugging Face directory of a random tiny model, written with `edit` applied to the list of
  // tensors first (to make it bad).
  fs::path WriteHfModel(
      const std::string& name, DType dtype,
      const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit = nullptr,
      const std::string& config_json = "") {
    const ModelConfig c = TinyGemma2();
    GemmaWeights w = RandomGemmaWeights(c, dtype, 5);
    std::vector<std::pair<std::string, Tensor>> tensors;
    ForEachGemmaParameter(c, w, [&](const GemmaParameter& p, Tensor& t) {
      tensors.emplace_back(p.name, t.dtype() == dtype ? t : t.To(dtype));
    });
    if (edit) edit(tensors);
    std::vector<TensorInfo> infos;
    for (auto& [n, t] : tensors) infos.push_back({n, t.shape(), t.dtype()});
    const fs::path dir = root_ / name;
    SafetensorsWriter writer(dir.string(), infos, 4096);  // several shards
    for (auto& [n, t] : tensors) writer.Write(n, t);
    std::ofstream(fs::path(writer.staging_dir()) / "config.json")
        << (config_json.empty() ? HfConfigJson(c, "float32") : config_json);
    writer.Commit();
    return dir;
  }

  std::string ConvertError(const fs::path& src, const fs::path& dst) {
    try {
      Convert(src.string(), dst.string(), ConvertOptions{});
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  // Nothing but the inputs remains under root_: no output, no temporary.
  void ExpectNoOutput(const fs::path& dst) {
    EXPECT_FALSE(fs::exists(dst)) << dst;
    for (const auto& entry : fs::directory_iterator(root_)) {
      const std::string n = entry.path().filename().string();
      EXPECT_EQ(n.find("tmp"), std::string::npos) << "left behind: " << entry.path();
    }
  }

  fs::path root_;
  static inline int counter_ = 0;
};

TEST_F(ConvertTest, RoundTripKeepsEveryTensorExactly) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const fs::path hf = WriteHfModel(StrCat("hf-", DTypeName(dtype)), dtype);
    const fs::path h5 = root_ / StrCat("m-", DTypeName(dtype), ".h5");
    const ConvertReport r = Convert(hf.string(), h5.string(), ConvertOptions{});
    EXPECT_EQ(r.model_type, "gemma2");
    EXPECT_EQ(r.parameters, TinyGemma2().ParameterCount());
    const fs::path back = root_ / StrCat("back-", DTypeName(dtype));
    Convert(h5.string(), back.string(), ConvertOptions{});
    EXPECT_TRUE(fs::exists(back / "config.json"));
    const ModelConfig again = ReadHfConfig((back / "config.json").string());
    EXPECT_EQ(ToAttributes(again).at("layer_kinds"), ToAttributes(TinyGemma2()).at("layer_kinds"));
    const auto original = OpenSafetensors(hf.string());
    const auto exported = OpenSafetensors(back.string());
    ASSERT_EQ(original->List().size(), exported->List().size());
    for (const TensorInfo& info : original->List()) {
      const Tensor a = original->Read(info.name);
      const Tensor b = exported->Read(info.name);
      ASSERT_EQ(a.dtype(), b.dtype()) << info.name;
      ASSERT_EQ(a.shape(), b.shape()) << info.name;
      EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << info.name;
    }
  }
}

TEST_F(ConvertTest, DTypeOptionConvertsWeights) {
  const fs::path hf = WriteHfModel("hf", DType::kF32);
  const fs::path h5 = root_ / "m.h5";
  ConvertOptions o;
  o.dtype = "bf16";
  Convert(hf.string(), h5.string(), o);
  const auto reader = Hdf5CheckpointReader::Open(h5.string());
  EXPECT_EQ(reader->Info("model.layers.0.mlp.up_proj.weight").dtype, DType::kBF16);
  // The model loads and runs from the converted file.
  GemmaDecoder model = LoadGemmaCheckpoint(h5.string());
  KvCache cache(model.config(), 1, 8);
  const Tensor logits =
      model.Forward({{SequenceChunk{0, {2, 5, 9}}}}, cache, LogitRows::kLastToken);
  EXPECT_EQ(logits.shape(), (Shape{1, 64}));
}

TEST_F(ConvertTest, MissingTensorIsNamed) {
  const fs::path hf = WriteHfModel("hf", DType::kF32, [](auto& tensors) {
    std::erase_if(tensors,
                  [](auto& t) { return t.first == "model.layers.1.self_attn.k_proj.weight"; });
  });
  const fs::path dst = root_ / "out.h5";
  EXPECT_THAT(ConvertError(hf, dst),
              HasSubstr("tensor 'model.layers.1.self_attn.k_proj.weight' is missing"));
  ExpectNoOutput(dst);
}

TEST_F(ConvertTest, WrongShapeNamesBothShapes) {
  const fs::path hf = WriteHfModel("hf", DType::kF32, [](auto& tensors) {
    for (auto& [n, t] : tensors) {
      if (n == "model.layers.0.mlp.down_proj.weight") t = Tensor::Zeros({16, 20}, DType::kF32);
    }
  });
  const fs::path dst = root_ / "out.h5";
  EXPECT_THAT(ConvertError(hf, dst),
              HasSubstr("tensor 'model.layers.0.mlp.down_proj.weight' has shape [16, 20] but the "
                        "config needs [16, 24]"));
  ExpectNoOutput(dst);
}

TEST_F(ConvertTest, UnexpectedTensorIsNamed) {
  const fs::path hf = WriteHfModel("hf", DType::kF32, [](auto& tensors) {
    tensors.emplace_back("model.layers.2.mlp.up_proj.weight", Tensor::Zeros({24, 16}, DType::kF32));
  });
  EXPECT_THAT(ConvertError(hf, root_ / "out.h5"),
              HasSubstr("unexpected tensor 'model.layers.2.mlp.up_proj.weight'"));
}

TEST_F(ConvertTest, TruncatedShardFailsAndLeavesNothing) {
  const fs::path hf = WriteHfModel("hf", DType::kF32);
  fs::path shard;
  for (const auto& e : fs::directory_iterator(hf)) {
    if (e.path().extension() == ".safetensors") shard = std::max(shard, e.path());
  }
  ASSERT_FALSE(shard.empty());
  fs::resize_file(shard, fs::file_size(shard) - 100);
  const fs::path dst = root_ / "out.h5";
  const std::string error = ConvertError(hf, dst);
  EXPECT_THAT(error, HasSubstr(shard.filename().string()));
  ExpectNoOutput(dst);
}

TEST_F(ConvertTest, UnknownModelTypeIsNamed) {
  const fs::path hf =
      WriteHfModel("hf", DType::kF32, nullptr, R"({"model_type": "llama", "vocab_size": 64})");
  const fs::path dst = root_ / "out.h5";
  EXPECT_THAT(ConvertError(hf, dst),
              HasSubstr("config.json: model_type: architecture: unknown 'llama'"));
  ExpectNoOutput(dst);
}

TEST_F(ConvertTest, BadConfigValueNamesTheKey) {
  std::string json = HfConfigJson(TinyGemma2(), "float32");
  json.replace(json.find("\"num_attention_heads\": 2"), 24, "\"num_attention_heads\": \"2\"");
  const fs::path hf = WriteHfModel("hf", DType::kF32, nullptr, json);
  EXPECT_THAT(ConvertError(hf, root_ / "out.h5"),
              HasSubstr("config.json: key 'num_attention_heads': expected an integer"));
}

TEST_F(ConvertTest, UnrecognisedSourceIsExplained) {
  std::ofstream(root_ / "weights.bin") << "x";
  EXPECT_THAT(ConvertError(root_ / "weights.bin", root_ / "out.h5"),
              HasSubstr("cannot tell the format of"));
  EXPECT_THAT(ConvertError(root_ / "absent", root_ / "out.h5"), HasSubstr("no such file"));
}

TEST_F(ConvertTest, ExportRefusesAnExistingDirectoryWithFiles) {
  const fs::path hf = WriteHfModel("hf", DType::kF32);
  const fs::path h5 = root_ / "m.h5";
  Convert(hf.string(), h5.string(), ConvertOptions{});
  // Converting onto an existing checkpoint, or exporting over the source directory, must not
  // clobber either.
  EXPECT_THAT(ConvertError(hf, h5), HasSubstr("already exists; pass --force"));
  ConvertOptions force;
  force.overwrite = true;
  force.dtype = "bf16";
  Convert(hf.string(), h5.string(), force);
  EXPECT_EQ(Hdf5CheckpointReader::Open(h5.string())->Info("model.norm.weight").dtype, DType::kBF16);
  EXPECT_TRUE(LoadGemmaCheckpoint(h5.string()).config().num_layers == 2);
  EXPECT_THAT(ConvertError(h5, hf), ::testing::Not(HasSubstr("(no error)")));
  EXPECT_TRUE(fs::exists(hf / "config.json"));
}

}  // namespace
}  // namespace gemmapod
