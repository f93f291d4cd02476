// Safetensors: round trips through one file and through shards with an index; hand-made files
// for the dtypes Hugging Face writes (F16, BF16); every kind of damage names the file and tensor.
#include "runtime/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "runtime/error.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("st-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A .safetensors file from a JSON header and raw data, as any writer would make it.
  fs::path HandMade(const std::string& name, const std::string& header, const std::string& data) {
    const fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return p;
  }

  std::vector<std::pair<std::string, Tensor>> Sample() {
    std::vector<std::pair<std::string, Tensor>> t;
    for (int i = 0; i < 5; ++i) {
      Tensor x = Tensor::Empty({3 + i, 4}, DType::kF32);
      for (int64_t j = 0; j < x.numel(); ++j) x.data<float>()[j] = static_cast<float>(i * 100 + j);
      t.emplace_back("layer." + std::to_string(i), i % 2 ? x.To(DType::kBF16) : x);
    }
    return t;
  }

  void Write(const fs::path& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
             int64_t shard_bytes) {
    std::vector<TensorInfo> infos;
    for (const auto& [n, t] : tensors) infos.push_back({n, t.shape(), t.dtype()});
    SafetensorsWriter w(dir.string(), infos, shard_bytes);
    for (auto it = tensors.rbegin(); it != tensors.rend(); ++it) w.Write(it->first, it->second);
    w.Commit();
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, OneFileRoundTrip) {
  const auto tensors = Sample();
  Write(dir_ / "model", tensors, 1 << 20);
  EXPECT_TRUE(fs::exists(dir_ / "model" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "model" / "model.safetensors.index.json"));
  const auto src = OpenSafetensors((dir_ / "model").string());
  ASSERT_EQ(src->List().size(), tensors.size());
  for (const auto& [n, t] : tensors) {
    const Tensor back = src->Read(n);
    ASSERT_EQ(back.shape(), t.shape());
    ASSERT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0) << n;
  }
}

TEST_F(SafetensorsTest, ShardedRoundTripWithIndexAndSlices) {
  const auto tensors = Sample();
  Write(dir_ / "model", tensors, 100);  // 48+32 | 80 | 48 | 112 bytes: four shards
  EXPECT_TRUE(fs::exists(dir_ / "model" / "model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir_ / "model" / "model-00001-of-00004.safetensors"));
  const auto src = OpenSafetensors((dir_ / "model").string());
  const Tensor full = src->Read("layer.4");  // f32 [7, 4]
  const Tensor cols = src->ReadSlice("layer.4", 1, 1, 3);
  ASSERT_EQ(cols.shape(), (Shape{7, 2}));
  for (int64_t r = 0; r < 7; ++r) {
    EXPECT_EQ(cols.data<float>()[r * 2], full.data<float>()[r * 4 + 1]);
    EXPECT_EQ(cols.data<float>()[r * 2 + 1], full.data<float>()[r * 4 + 2]);
  }
}

TEST_F(SafetensorsTest, ReadsF16AndBF16AsHuggingFaceWritesThem) {
  // F16 1.0, -2.5, 65504 (max), a subnormal; BF16 1.0, -2.5.
  const std::string f16 = std::string("\x00\x3c\x00\xc1\xff\x7b\x01\x00", 8);
  const std::string bf16 = std::string("\x80\x3f\x20\xc0", 4);
  const fs::path p = HandMade(
      "h.safetensors",
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
      R"("c":{"dtype":"I64","shape":[1],"data_offsets":[12,20]}})",
      f16 + bf16 + std::string(8, '\0'));
  const auto src = OpenSafetensors(p.string());
  const Tensor a = src->Read("a");
  ASSERT_EQ(a.dtype(), DType::kF32);
  EXPECT_EQ(a.data<float>()[0], 1.0f);
  EXPECT_EQ(a.data<float>()[1], -2.5f);
  EXPECT_EQ(a.data<float>()[2], 65504.0f);
  EXPECT_FLOAT_EQ(a.data<float>()[3], 5.9604645e-08f);
  const Tensor b = src->Read("b");
  EXPECT_EQ(BF16ToFloat(b.data<BF16>()[1]), -2.5f);
  // Listed, but asking about or reading an unsupported dtype names it.
  EXPECT_TRUE(src->Has("c"));
  EXPECT_EQ(src->List().size(), 3u);
  EXPECT_THAT(ErrorOf([&] { src->Info("c"); }), HasSubstr("tensor 'c' has dtype I64"));
  EXPECT_THAT(ErrorOf([&] { src->Read("c"); }), HasSubstr("tensor 'c' has dtype I64"));
}

TEST_F(SafetensorsTest, ScalarsAndHugeShapes) {
  // A scalar once read back uninitialised; a shape whose byte size wraps 64 bits once passed.
  const float value = 3.5f;
  const auto src = OpenSafetensors(
      HandMade("scalar.safetensors", R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})",
               std::string(reinterpret_cast<const char*>(&value), 4))
          .string());
  EXPECT_EQ(src->Read("s").data<float>()[0], 3.5f);
  EXPECT_THAT(ErrorOf([&] { src->ReadSlice("s", 0, 0, 1); }), HasSubstr("out of range"));
  EXPECT_THAT(ErrorOf([&] {
                OpenSafetensors(HandMade("wrap.safetensors",
                                         R"({"w":{"dtype":"F32","shape":[4611686018427387905],)"
                                         R"("data_offsets":[0,4]}})",
                                         std::string(4, 'x'))
                                    .string());
              }),
              HasSubstr("wrap.safetensors: tensor 'w': shape [4611686018427387905] is too large"));
}

TEST_F(SafetensorsTest, DamageIsNamed) {
  const std::string ok_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_THAT(
      ErrorOf([&] { OpenSafetensors(HandMade("short.safetensors", ok_header, "1234").string()); }),
      HasSubstr("short.safetensors: tensor 'w': bytes [0, 8) lie outside"));
  EXPECT_THAT(
      ErrorOf([&] {
        OpenSafetensors(HandMade("size.safetensors",
                                 R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                                 std::string(8, 'x'))
                            .string());
      }),
      HasSubstr("size.safetensors: tensor 'w': 8 bytes for shape [3] of F32"));
  EXPECT_THAT(
      ErrorOf([&] { OpenSafetensors(HandMade("json.safetensors", "{not json", "").string()); }),
      HasSubstr("json.safetensors: the safetensors header is not valid JSON"));
  // A number too large for JSON's integers was once an uncaught library exception.
  EXPECT_THAT(
      ErrorOf([&] {
        OpenSafetensors(
            HandMade("overflow.safetensors",
                     R"({"w":{"dtype":"F32","shape":[390144e396288],"data_offsets":[0,8]}})",
                     std::string(8, 'x'))
                .string());
      }),
      HasSubstr("overflow.safetensors: the safetensors header is not valid JSON"));
  // Two tensors over the same bytes: refused, naming both (an empty tensor shares nothing).
  EXPECT_THAT(
      ErrorOf([&] {
        OpenSafetensors(HandMade("overlap.safetensors",
                                 R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                 std::string(12, 'x'))
                            .string());
      }),
      HasSubstr("overlap.safetensors: tensors 'a' and 'b' overlap (bytes up to 8 and from 4)"));
  EXPECT_NO_THROW(
      OpenSafetensors(HandMade("empty.safetensors",
                               R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                               std::string(8, 'x'))
                          .string()));
  std::ofstream(dir_ / "tiny.safetensors") << "abc";
  EXPECT_THAT(ErrorOf([&] { OpenSafetensors((dir_ / "tiny.safetensors").string()); }),
              HasSubstr("tiny.safetensors: truncated"));
  const fs::path huge = HandMade("huge.safetensors", ok_header, std::string(8, 'x'));
  {
    std::fstream f(huge, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(6);
    f.put('\x7f');  // header length now far beyond the file
  }
  EXPECT_THAT(ErrorOf([&] { OpenSafetensors(huge.string()); }),
              HasSubstr("huge.safetensors: truncated or not safetensors"));
}

TEST_F(SafetensorsTest, IndexProblemsAreNamed) {
  Write(dir_ / "model", Sample(), 100);
  fs::remove(dir_ / "model" / "model-00003-of-00004.safetensors");
  EXPECT_THAT(ErrorOf([&] { OpenSafetensors((dir_ / "model").string()); }),
              HasSubstr("names shard model-00003-of-00004.safetensors (for tensor 'layer.3'), "
                        "which does not exist"));
  std::ofstream(dir_ / "model" / "model.safetensors.index.json")
      << R"({"weight_map": {"ghost": "model-00001-of-00004.safetensors"}})";
  EXPECT_THAT(ErrorOf([&] { OpenSafetensors((dir_ / "model").string()); }),
              HasSubstr("names tensor 'ghost' in"));
  fs::create_directories(dir_ / "empty");
  EXPECT_THAT(ErrorOf([&] { OpenSafetensors((dir_ / "empty").string()); }),
              HasSubstr("no model.safetensors or model.safetensors.index.json"));
}

TEST_F(SafetensorsTest, WriterIsAtomicAndChecksItsPlan) {
  const auto tensors = Sample();
  std::vector<TensorInfo> infos;
  for (const auto& [n, t] : tensors) infos.push_back({n, t.shape(), t.dtype()});
  {
    SafetensorsWriter w((dir_ / "out").string(), infos, 1 << 20);
    w.Write(tensors[0].first, tensors[0].second);
    EXPECT_THAT(ErrorOf([&] { w.Write("layer.1", tensors[0].second); }),
                HasSubstr("tensor 'layer.1' is f32[3, 4] on cpu:0 but was planned as bf16[4, 4]"));
    EXPECT_THAT(ErrorOf([&] { w.Commit(); }), HasSubstr("was never written"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  for (const auto& e : fs::directory_iterator(dir_)) ADD_FAILURE() << "left: " << e.path();
  fs::create_directories(dir_ / "full");
  std::ofstream(dir_ / "full" / "keep.txt") << "x";
  EXPECT_THAT(ErrorOf([&] { SafetensorsWriter((dir_ / "full").string(), infos); }),
              HasSubstr("exists and is not an empty directory"));
}

}  // namespace
}  // namespace gemmapod
