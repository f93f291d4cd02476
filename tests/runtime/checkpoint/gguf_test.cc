// GGUF reading: the metadata and tensors of a file written by gguf-py, dequantized bit for bit as
// gguf-py dequantizes them (tests/fixtures/gguf/, made by tools/golden/make_gguf_fixtures.py);
// the TensorSource view; and damaged files, each of which must fail naming the file.
#include "runtime/checkpoint/gguf.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <set>

#include "runtime/checkpoint/npy.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char kFixtures[] = "tests/fixtures/gguf";
const std::string kSample = std::string(kFixtures) + "/sample.gguf";

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// GGUF bytes built field by field, for files gguf-py will not write.
class Bytes {
 public:
  Bytes& U8(uint8_t v) { return Raw(&v, 1); }
  Bytes& U32(uint32_t v) { return Raw(&v, 4); }
  Bytes& U64(uint64_t v) { return Raw(&v, 8); }
  Bytes& F32(float v) { return Raw(&v, 4); }
  Bytes& Str(const std::string& s) {
    U64(s.size());
    s_ += s;
    return *this;
  }
  Bytes& Header(uint64_t tensors, uint64_t kvs, uint32_t version = 3) {
    s_ += "GGUF";
    return U32(version).U64(tensors).U64(kvs);
  }
  Bytes& TensorInfo(const std::string& name, std::vector<uint64_t> dims, uint32_t type,
                    uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) U64(d);
    return U32(type).U64(offset);
  }
  // Zeros up to the next multiple of `alignment`, where the data section starts.
  Bytes& Align(size_t alignment = 32) {
    s_.append((alignment - s_.size() % alignment) % alignment, '\0');
    return *this;
  }
  Bytes& Zeros(size_t n) {
    s_.append(n, '\0');
    return *this;
  }
  const std::string& str() const { return s_; }

 private:
  Bytes& Raw(const void* p, size_t n) {
    s_.append(static_cast<const char*>(p), n);
    return *this;
  }
  std::string s_;
};

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gguf-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }

  // The message of opening `bytes` as a GGUF file, which must name the file.
  std::string OpenError(const std::string& bytes) {
    const std::string path = Write("bad.gguf", bytes);
    const std::string message = ErrorOf([&] { GgufFile f(path); });
    EXPECT_THAT(message, HasSubstr(path));
    return message;
  }

  fs::path dir_;
};

TEST_F(GgufTest, ReadsEveryMetadataValueType) {
  GgufFile f(kSample);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  ASSERT_FALSE(f.keys().empty());
  EXPECT_EQ(f.keys().front(), "general.architecture");  // file order, not sorted
  EXPECT_EQ(f.String("general.architecture"), "gemmapod-test");
  EXPECT_EQ(f.Int("general.alignment"), 64);

  EXPECT_EQ(f.Value("test.uint8").type, GgufValueType::kUint8);
  EXPECT_EQ(f.Int("test.uint8"), 200);
  EXPECT_EQ(f.Value("test.int8").type, GgufValueType::kInt8);
  EXPECT_EQ(f.Int("test.int8"), -100);
  EXPECT_EQ(f.Value("test.uint16").type, GgufValueType::kUint16);
  EXPECT_EQ(f.Int("test.uint16"), 60000);
  EXPECT_EQ(f.Value("test.int16").type, GgufValueType::kInt16);
  EXPECT_EQ(f.Int("test.int16"), -30000);
  EXPECT_EQ(f.Value("test.uint32").type, GgufValueType::kUint32);
  EXPECT_EQ(f.Int("test.uint32"), 4000000000);
  EXPECT_EQ(f.Value("test.int32").type, GgufValueType::kInt32);
  EXPECT_EQ(f.Int("test.int32"), -2000000000);
  EXPECT_EQ(f.Value("test.uint64").type, GgufValueType::kUint64);
  EXPECT_EQ(f.Int("test.uint64"), int64_t{1} << 40);
  EXPECT_EQ(f.Value("test.int64").type, GgufValueType::kInt64);
  EXPECT_EQ(f.Int("test.int64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.Value("test.float32").type, GgufValueType::kFloat32);
  EXPECT_EQ(f.Float("test.float32"), static_cast<double>(1e-6f));  // stored as f32
  EXPECT_EQ(f.Value("test.float64").type, GgufValueType::kFloat64);
  EXPECT_EQ(f.Float("test.float64"), 0.1);
  EXPECT_EQ(f.Value("test.bool_true").type, GgufValueType::kBool);
  EXPECT_TRUE(f.Bool("test.bool_true"));
  EXPECT_FALSE(f.Bool("test.bool_false"));
  EXPECT_EQ(f.Value("test.string").type, GgufValueType::kString);
  EXPECT_EQ(f.String("test.string"), "h\xC3\xA9llo \xE2\x98\x83 <start_of_turn>");
}

TEST_F(GgufTest, ReadsArraysOfEveryKind) {
  GgufFile f(kSample);
  EXPECT_THAT(f.StringArray("test.array.string"),
              ElementsAre("a", "", "\xE2\x96\x81the", "<start_of_turn>", "\xE2\x98\x83"));
  EXPECT_THAT(f.FloatArray("test.array.float32"),
              ElementsAre(0.5, -1.25, static_cast<double>(1e-6f)));
  EXPECT_THAT(f.FloatArray("test.array.float64"), ElementsAre(0.1, -2.5));
  EXPECT_THAT(f.IntArray("test.array.int32"), ElementsAre(1, -2, 2147483647));
  EXPECT_THAT(f.IntArray("test.array.uint8"), ElementsAre(0, 255, 7));
  EXPECT_THAT(f.IntArray("test.array.int16"), ElementsAre(-32768, 32767));
  EXPECT_THAT(f.IntArray("test.array.int64"), ElementsAre(INT64_MIN, INT64_MAX));
  const GgufValue& bools = f.Value("test.array.bool");
  EXPECT_EQ(bools.type, GgufValueType::kArray);
  EXPECT_EQ(bools.element_type, GgufValueType::kBool);
  EXPECT_THAT(bools.integers, ElementsAre(1, 0, 1));
  const GgufValue& nested = f.Value("test.array.nested");
  EXPECT_EQ(nested.element_type, GgufValueType::kArray);
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[0].element_type, GgufValueType::kInt32);
  EXPECT_THAT(nested.arrays[0].integers, ElementsAre(1, 2));
  EXPECT_THAT(nested.arrays[1].integers, ElementsAre(3));
}

TEST_F(GgufTest, AccessorsNameTheFileAndKeyOnAbsentOrWrongType) {
  GgufFile f(kSample);
  EXPECT_FALSE(f.Has("test.absent"));
  EXPECT_THAT(ErrorOf([&] { f.Int("test.absent"); }),
              AllOf(HasSubstr(kSample), HasSubstr("no metadata key 'test.absent'")));
  EXPECT_THAT(ErrorOf([&] { f.String("test.uint8"); }),
              AllOf(HasSubstr(kSample), HasSubstr("'test.uint8' is uint8, not a string")));
  EXPECT_THAT(ErrorOf([&] { f.Int("test.bool_true"); }),
              HasSubstr("'test.bool_true' is bool, not an integer"));
  EXPECT_THAT(ErrorOf([&] { f.Int("test.float32"); }), HasSubstr("not an integer"));
  EXPECT_THAT(ErrorOf([&] { f.Float("test.int32"); }), HasSubstr("is int32, not a float"));
  EXPECT_THAT(ErrorOf([&] { f.Bool("test.uint8"); }), HasSubstr("not a bool"));
  EXPECT_THAT(ErrorOf([&] { f.StringArray("test.array.int32"); }),
              HasSubstr("'test.array.int32' is array of int32, not an array of strings"));
  EXPECT_THAT(ErrorOf([&] { f.IntArray("test.array.bool"); }), HasSubstr("array of bool"));
  EXPECT_THAT(ErrorOf([&] { f.FloatArray("test.string"); }), HasSubstr("is string"));
  // uint64 values beyond int64 are kept, but refused where an int64 is asked for.
  EXPECT_EQ(static_cast<uint64_t>(f.Value("test.uint64_huge").integer), (uint64_t{1} << 63) + 5);
  EXPECT_THAT(ErrorOf([&] { f.Int("test.uint64_huge"); }),
              AllOf(HasSubstr(kSample), HasSubstr("9223372036854775813")));
  EXPECT_THAT(ErrorOf([&] { f.IntArray("test.array.uint64"); }),
              HasSubstr("element 1 holds 18446744073709551615"));
}

TEST_F(GgufTest, TensorInfosReverseGgmlDims) {
  GgufFile f(kSample);
  EXPECT_EQ(f.tensors().front().name, "f32.vector");  // file order
  const GgufTensorInfo& cube = f.FindTensor("f32.cube");
  EXPECT_THAT(cube.dims, ElementsAre(5, 3, 2));
  EXPECT_EQ(cube.shape(), (Shape{2, 3, 5}));
  EXPECT_EQ(cube.type, GgmlType::kF32);
  EXPECT_EQ(cube.nbytes, 30u * 4);
  const GgufTensorInfo& q4d = f.FindTensor("q8_0.4d");
  EXPECT_THAT(q4d.dims, ElementsAre(32, 3, 1, 2));
  EXPECT_EQ(q4d.shape(), (Shape{2, 1, 3, 32}));
  EXPECT_EQ(q4d.num_rows(), 6);
  EXPECT_EQ(q4d.nbytes, 6u * 34);
  const GgufTensorInfo& q4k = f.FindTensor("q4_k.real");
  EXPECT_EQ(q4k.type, GgmlType::kQ4_K);
  EXPECT_EQ(q4k.shape(), (Shape{2, 1024}));
  EXPECT_EQ(q4k.nbytes, 2u * 4 * 144);
  for (const GgufTensorInfo& t : f.tensors()) EXPECT_EQ(t.offset % 64, 0u) << t.name;
  EXPECT_FALSE(f.HasTensor("absent"));
  EXPECT_THAT(ErrorOf([&] { f.FindTensor("absent"); }),
              AllOf(HasSubstr(kSample), HasSubstr("no tensor named 'absent'")));
}

// gguf-py's dequantization of every tensor, reproduced bit for bit (NaN included).
TEST_F(GgufTest, DequantizesEveryTypeExactlyAsGgufPy) {
  GgufFile f(kSample);
  std::set<GgmlType> covered;
  for (const GgufTensorInfo& t : f.tensors()) {
    if (!CanDequantize(t.type)) continue;
    SCOPED_TRACE(t.name);
    const Tensor want = ReadNpy(StrCat(kFixtures, "/", t.name, ".npy"));
    const Tensor got = f.Dequantize(t.name);
    ASSERT_EQ(got.shape(), want.shape());
    int64_t mismatches = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
      uint32_t a, b;
      std::memcpy(&a, got.data<float>() + i, 4);
      std::memcpy(&b, want.data<float>() + i, 4);
      if (a != b && mismatches++ < 5) {
        ADD_FAILURE() << "element " << i << ": " << got.data<float>()[i] << " (0x" << std::hex << a
                      << "), gguf-py " << want.data<float>()[i] << " (0x" << b << ")";
      }
    }
    EXPECT_EQ(mismatches, 0);
    covered.insert(t.type);
  }
  for (GgmlType type :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0, GgmlType::kQ4_1,
        GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0, GgmlType::kQ2_K, GgmlType::kQ3_K,
        GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    EXPECT_TRUE(covered.count(type)) << GgmlTypeName(type) << " has no golden fixture";
  }
}

TEST_F(GgufTest, UnsupportedTypeIsListedButRefusedOnRead) {
  GgufFile f(kSample);
  EXPECT_EQ(f.FindTensor("iq4_nl.unsupported").type, GgmlType::kIQ4_NL);
  EXPECT_THAT(ErrorOf([&] { f.Dequantize("iq4_nl.unsupported"); }),
              AllOf(HasSubstr(kSample), HasSubstr("'iq4_nl.unsupported'"), HasSubstr("IQ4_NL")));
  auto source = OpenGguf(kSample);
  EXPECT_TRUE(source->Has("iq4_nl.unsupported"));
  for (auto call : {+[](const TensorSource& s) { s.Info("iq4_nl.unsupported"); },
                    +[](const TensorSource& s) { s.Read("iq4_nl.unsupported"); },
                    +[](const TensorSource& s) { s.ReadSlice("iq4_nl.unsupported", 0, 0, 1); }}) {
    EXPECT_THAT(ErrorOf([&] { call(*source); }),
                AllOf(HasSubstr(kSample), HasSubstr("'iq4_nl.unsupported'"), HasSubstr("IQ4_NL")));
  }
}

TEST_F(GgufTest, TensorSourceListsF32AndReadsAsDequantize) {
  auto file = std::make_shared<const GgufFile>(kSample);
  auto source = GgufTensorSource(file);
  EXPECT_EQ(source->origin(), kSample);
  const std::vector<TensorInfo> list = source->List();
  ASSERT_EQ(list.size(), file->tensors().size());
  for (size_t i = 1; i < list.size(); ++i) EXPECT_LT(list[i - 1].name, list[i].name);
  for (const TensorInfo& info : list) {
    EXPECT_EQ(info.dtype, DType::kF32) << info.name;
    EXPECT_EQ(info.shape, file->FindTensor(info.name).shape()) << info.name;
  }
  const TensorInfo info = source->Info("q6_k.real");
  EXPECT_EQ(info.shape, (Shape{2, 2048}));
  EXPECT_EQ(info.dtype, DType::kF32);
  const Tensor a = source->Read("q6_k.real");
  const Tensor b = file->Dequantize("q6_k.real");
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  EXPECT_FALSE(source->Has("absent"));
  EXPECT_THAT(ErrorOf([&] { source->Info("absent"); }), HasSubstr(kSample));
}

// Every slice of every dimension equals the same slice of the whole tensor.
TEST_F(GgufTest, ReadSliceMatchesSlicingTheWholeTensor) {
  auto source = OpenGguf(kSample);
  for (const char* name : {"q8_0.4d", "q4_k.real", "f32.cube", "q5_1.matrix", "f32.vector"}) {
    const Tensor whole = source->Read(name);
    const Shape& shape = whole.shape();
    for (int dim = 0; dim < whole.rank(); ++dim) {
      const int64_t extent = shape[static_cast<size_t>(dim)];
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, extent},
                                {extent / 2, extent},
                                {extent / 3, extent / 3 + 1},
                                {1, 1}}) {
        SCOPED_TRACE(StrCat(name, " dim ", dim, " [", begin, ", ", end, ")"));
        const Tensor slice = source->ReadSlice(name, dim, begin, end);
        Shape want_shape = shape;
        want_shape[static_cast<size_t>(dim)] = end - begin;
        ASSERT_EQ(slice.shape(), want_shape);
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < dim; ++i) outer *= shape[static_cast<size_t>(i)];
        for (int i = dim + 1; i < whole.rank(); ++i) inner *= shape[static_cast<size_t>(i)];
        const float* w = whole.data<float>();
        const float* s = slice.data<float>();
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t k = begin; k < end; ++k) {
            for (int64_t i = 0; i < inner; ++i) {
              ASSERT_EQ(s[(o * (end - begin) + (k - begin)) * inner + i],
                        w[(o * extent + k) * inner + i]);
            }
          }
        }
      }
    }
  }
  EXPECT_THAT(ErrorOf([&] { source->ReadSlice("q4_k.real", 1, 0, 1025); }),
              AllOf(HasSubstr(kSample), HasSubstr("out of range")));
  EXPECT_THAT(ErrorOf([&] { source->ReadSlice("q4_k.real", 2, 0, 1); }), HasSubstr("out of range"));
}

TEST_F(GgufTest, HandMadeFileWithEmptyArrayScalarAndEmptyTensor) {
  Bytes b;
  b.Header(3, 2);
  b.Str("empty").U32(9).U32(5).U64(0);  // array of zero int32
  b.Str("name").U32(8).Str("x");
  b.TensorInfo("scalar", {}, 0, 0);
  b.TensorInfo("empty", {0, 4}, 12, 32);  // Q4_K with no rows: zero blocks
  b.TensorInfo("row", {2}, 1, 32);
  b.Align().F32(2.5f).Zeros(28).U32(0x3C00BC00);  // f16 -1, 1
  GgufFile f(Write("hand.gguf", b.str()));
  EXPECT_TRUE(f.IntArray("empty").empty());
  EXPECT_EQ(f.String("name"), "x");
  EXPECT_EQ(f.alignment(), 32u);
  const Tensor scalar = f.Dequantize("scalar");
  EXPECT_EQ(scalar.shape(), Shape{});
  EXPECT_EQ(scalar.data<float>()[0], 2.5f);
  EXPECT_EQ(f.Dequantize("empty").shape(), (Shape{4, 0}));
  const Tensor row = f.Dequantize("row");
  EXPECT_EQ(row.data<float>()[0], -1.0f);
  EXPECT_EQ(row.data<float>()[1], 1.0f);
}

TEST_F(GgufTest, RefusesOtherMagicVersionsAndEndianness) {
  EXPECT_THAT(OpenError(""), HasSubstr("truncated"));
  EXPECT_THAT(OpenError("GGU"), HasSubstr("truncated"));
  EXPECT_THAT(OpenError("GGML" + std::string(20, '\0')), HasSubstr("not a GGUF file"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 0, 2).str()),
              HasSubstr("GGUF version 2 is not supported"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 0, 1).str()), HasSubstr("version 1"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 0, 0x03000000).str()), HasSubstr("big-endian"));
  EXPECT_THAT(OpenError("GGUF\x03"), HasSubstr("truncated"));
  GgufFile empty(Write("empty.gguf", Bytes().Header(0, 0).str()));  // valid, if useless
  EXPECT_TRUE(empty.tensors().empty());
}

// Every prefix of a valid file shorter than its last tensor's data fails cleanly, naming the
// file; the header and the start of the data section byte by byte.
TEST_F(GgufTest, EveryTruncationIsAnErrorNamingTheFile) {
  const std::string full = ReadFile(kSample);
  GgufFile f(kSample);
  uint64_t data_end = 0;
  for (const GgufTensorInfo& t : f.tensors()) data_end = std::max(data_end, t.offset + t.nbytes);
  const size_t needed = static_cast<size_t>(f.data_offset() + data_end);
  ASSERT_LE(needed, full.size());
  const std::string path = (dir_ / "cut.gguf").string();
  for (size_t n = 0; n < needed; n += n < f.data_offset() + 256 ? 1 : 97) {
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << full.substr(0, n); }
    const std::string message = ErrorOf([&] { GgufFile cut(path); });
    ASSERT_THAT(message, HasSubstr(path)) << "cut at " << n;
    if (n >= f.data_offset()) {
      ASSERT_THAT(message, HasSubstr("past the end of the file"));
    }
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << full.substr(0, needed);
  EXPECT_NO_THROW(GgufFile{path});  // the padding after the last tensor is optional
}

TEST_F(GgufTest, RefusesHugeLengthsWithoutAllocating) {
  const uint64_t huge = uint64_t{1} << 60;
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).U64(huge).Zeros(64).str()),
              HasSubstr("the key is 1152921504606846976 bytes long"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(8).U64(huge).Zeros(64).str()),
              AllOf(HasSubstr("metadata key 'k'"), HasSubstr("1152921504606846976 bytes long")));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(9).U32(4).U64(huge).Zeros(64).str()),
              AllOf(HasSubstr("metadata key 'k'"), HasSubstr("an array of 1152921504606846976")));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(9).U32(8).U64(huge).Zeros(64).str()),
              HasSubstr("string values"));
  EXPECT_THAT(OpenError(Bytes().Header(0, huge).Zeros(64).str()),
              HasSubstr("1152921504606846976 metadata key/values cannot fit"));
  EXPECT_THAT(OpenError(Bytes().Header(huge, 0).Zeros(64).str()),
              HasSubstr("1152921504606846976 tensor infos cannot fit"));
  EXPECT_THAT(OpenError(Bytes().Header(1, 0).U64(huge).Zeros(64).str()),
              AllOf(HasSubstr("tensor info 0"), HasSubstr("tensor name is 1152921504606846976")));
}

TEST_F(GgufTest, RefusesMalformedMetadata) {
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(13).U32(0).str()),
              AllOf(HasSubstr("metadata key 'k'"), HasSubstr("unknown metadata value type 13")));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(9).U32(77).U64(0).str()),
              HasSubstr("unknown metadata value type 77"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 2).Str("k").U32(0).U8(1).Str("k").U32(0).U8(2).str()),
              AllOf(HasSubstr("metadata key 'k'"), HasSubstr("appears twice")));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("k").U32(4).U8(1).str()),
              AllOf(HasSubstr("truncated"), HasSubstr("metadata key 'k'")));
  Bytes deep;
  deep.Header(0, 1).Str("k").U32(9);
  for (int i = 0; i < 40; ++i) deep.U32(9).U64(1);
  deep.U32(0).U64(0);
  EXPECT_THAT(OpenError(deep.str()), HasSubstr("nested deeper"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("general.alignment").U32(4).U32(48).str()),
              HasSubstr("general.alignment must be a power of two"));
  EXPECT_THAT(OpenError(Bytes().Header(0, 1).Str("general.alignment").U32(8).Str("32").str()),
              HasSubstr("general.alignment must be a power of two integer up to 2^30, not string"));
}

TEST_F(GgufTest, RefusesMalformedTensorInfos) {
  auto one = [](const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset,
                size_t data) {
    return Bytes()
        .Header(1, 0)
        .TensorInfo(name, std::move(dims), type, offset)
        .Align()
        .Zeros(data)
        .str();
  };
  EXPECT_THAT(OpenError(one("t", {4}, 0, 64, 16)),
              AllOf(HasSubstr("tensor 't'"), HasSubstr("past the end of the file")));
  EXPECT_THAT(OpenError(one("t", {8}, 0, 0, 16)), HasSubstr("past the end of the file"));
  EXPECT_THAT(OpenError(one("t", {4}, 0, uint64_t{1} << 63, 16)), HasSubstr("past the end"));
  EXPECT_THAT(OpenError(one("t", {4}, 0, 16, 64)),
              HasSubstr("data offset 16 is not a multiple of the alignment 32"));
  EXPECT_THAT(OpenError(one("t", {100, 2}, 12, 0, 4096)),
              AllOf(HasSubstr("tensor 't'"),
                    HasSubstr("a row of 100 elements (dims[0]) is not a whole number of Q4_K "
                              "blocks of 256")));
  EXPECT_THAT(OpenError(one("t", {1, 1, 1, 1, 1}, 0, 0, 64)),
              HasSubstr("5 dimensions; ggml allows at most 4"));
  EXPECT_THAT(OpenError(one("t", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0, 64)),
              HasSubstr("overflow"));
  EXPECT_THAT(OpenError(one("t", {uint64_t{1} << 63}, 0, 0, 64)), HasSubstr("overflow"));
  EXPECT_THAT(OpenError(one("t", {uint64_t{1} << 62}, 0, 0, 64)),
              HasSubstr("the byte size of 4611686018427387904 F32 elements overflows"));
  EXPECT_THAT(OpenError(one("t", {32}, 31, 0, 64)), HasSubstr("unknown ggml type id 31"));
  EXPECT_THAT(OpenError(one("t", {32}, 99, 0, 64)), HasSubstr("unknown ggml type id 99"));
  EXPECT_THAT(OpenError(Bytes()
                            .Header(2, 0)
                            .TensorInfo("t", {4}, 0, 0)
                            .TensorInfo("t", {4}, 0, 32)
                            .Align()
                            .Zeros(64)
                            .str()),
              AllOf(HasSubstr("tensor 't'"), HasSubstr("appears twice")));
  EXPECT_THAT(OpenError(Bytes()
                            .Header(2, 0)
                            .TensorInfo("a", {16}, 0, 0)
                            .TensorInfo("b", {16}, 0, 32)
                            .Align()
                            .Zeros(128)
                            .str()),
              HasSubstr("tensors 'a' and 'b' overlap (data offsets 0 + 64 bytes and 32)"));
}

// Random damage to the header: opening either succeeds (and then every tensor reads) or throws
// gemmapod::Error; never a crash, another exception, or a huge allocation.
TEST_F(GgufTest, RandomlyCorruptedHeadersFailCleanly) {
  const std::string full = ReadFile(kSample);
  const size_t header = static_cast<size_t>(GgufFile(kSample).data_offset());
  std::mt19937 rng(7);
  const std::string path = (dir_ / "corrupt.gguf").string();
  int opened = 0, refused = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    std::string bytes = full;
    const int changes = 1 + static_cast<int>(rng() % 3);
    for (int i = 0; i < changes; ++i) bytes[rng() % header] = static_cast<char>(rng() & 0xff);
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }
    try {
      GgufFile f(path);
      for (const GgufTensorInfo& t : f.tensors()) {
        if (CanDequantize(t.type)) f.Dequantize(t.name);
      }
      ++opened;
    } catch (const Error& e) {
      ASSERT_THAT(e.what(), HasSubstr(path));
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(opened, 0);  // flips inside strings and values leave a valid file
}

}  // namespace
}  // namespace gemmapod
