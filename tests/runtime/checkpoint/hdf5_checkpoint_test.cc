// Our HDF5 checkpoints: every dtype and attribute kind round-trips, hyperslab reads return exactly
// the slice, saves are atomic, and damage (a flipped byte, a truncated file, a foreign file) fails
// with a message naming the file and tensor.
#include "runtime/checkpoint/hdf5_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "runtime/error.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

Tensor Iota(Shape shape, DType dtype) {
  Tensor f = Tensor::Empty(shape, DType::kF32);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = static_cast<float>(i) * 0.5f - 3;
  if (dtype == DType::kF32) return f;
  if (dtype == DType::kBF16) return f.To(DType::kBF16);
  Tensor t = Tensor::Empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kI32) t.data<int32_t>()[i] = static_cast<int32_t>(i * 7 - 100);
    if (dtype == DType::kI8) t.data<int8_t>()[i] = static_cast<int8_t>(i % 200 - 100);
  }
  return t;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

class Hdf5CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("h5-test-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A checkpoint with one tensor of each dtype, a big chunked one, attributes and a file.
  std::string WriteSample() {
    const std::string path = (dir_ / "sample.h5").string();
    Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
    w.SetConfig(config_);
    for (const auto& [name, t] : tensors_) w.Write(name, t);
    w.WriteFile("tokenizer.model", std::string("\x00\x01spm\xff", 6));
    w.Commit();
    return path;
  }

  fs::path dir_;
  Attributes config_ = {{"architecture", std::string("gemma2")},
                        {"hidden_size", int64_t{2304}},
                        {"rms_norm_eps", 1e-6},
                        {"layer_kinds", std::vector<std::string>{"sliding", "global"}},
                        {"ids", std::vector<int64_t>{1, -2, 3}},
                        {"thetas", std::vector<double>{1e4, 1e6}},
                        {"empty_ints", std::vector<int64_t>{}},
                        {"empty_doubles", std::vector<double>{}},
                        {"empty_string", std::string()},
                        {"empty_strings", std::vector<std::string>{}}};
  std::vector<std::pair<std::string, Tensor>> tensors_ = {
      {"model.embed_tokens.weight", Iota({6, 5}, DType::kBF16)},
      {"model.norm.weight", Iota({5}, DType::kF32)},
      {"ids", Iota({3, 2}, DType::kI32)},
      {"q8", Iota({4, 3}, DType::kI8)},
      {"scalar", Iota({}, DType::kF32)},
      {"big", Iota({700, 513}, DType::kF32)}};  // > 1 MiB: chunked storage
};

TEST_F(Hdf5CheckpointTest, EverythingRoundTrips) {
  const std::string path = WriteSample();
  const auto r = Hdf5CheckpointReader::Open(path);
  EXPECT_EQ(r->config(), config_);
  ASSERT_EQ(r->List().size(), tensors_.size());
  for (const auto& [name, t] : tensors_) {
    EXPECT_TRUE(SameBytes(r->Read(name), t)) << name;
    EXPECT_EQ(r->Info(name).dtype, t.dtype()) << name;
  }
  EXPECT_TRUE(r->HasFile("tokenizer.model"));
  EXPECT_EQ(r->ReadFile("tokenizer.model"), std::string("\x00\x01spm\xff", 6));
  EXPECT_FALSE(r->HasFile("other"));
  r->VerifyAll();
}

// State beside the model (a trainer's optimizer moments and progress) lives in groups of its own:
// it round-trips, model readers never list it, and the model's own groups cannot be written.
TEST_F(Hdf5CheckpointTest, GroupsBesideTheModelRoundTripAndStayOutOfTheModel) {
  const std::string path = (dir_ / "state.h5").string();
  {
    Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
    w.Write("model.norm.weight", Iota({5}, DType::kF32));
    w.WriteToGroup("optimizer/exp_avg", "model.norm.weight", Iota({5}, DType::kF32));
    w.WriteToGroup("optimizer/exp_avg", "big", Iota({700, 513}, DType::kF32));
    w.SetGroupAttributes("trainer", {{"step", int64_t{42}}, {"elapsed_s", 1.5}});
    EXPECT_THAT(ErrorOf([&] { w.WriteToGroup("params", "x", Iota({1}, DType::kF32)); }),
                HasSubstr("/params is the model's own"));
    EXPECT_THAT(ErrorOf([&] { w.WriteToGroup("a//b", "x", Iota({1}, DType::kF32)); }),
                HasSubstr("invalid name ''"));
    w.Commit();
  }
  const auto r = Hdf5CheckpointReader::Open(path);
  ASSERT_EQ(r->List().size(), 1u);  // the model's tensors only
  EXPECT_TRUE(r->HasGroup("optimizer/exp_avg"));
  EXPECT_TRUE(r->HasGroup("optimizer"));
  EXPECT_FALSE(r->HasGroup("optimizer/exp_avg_sq"));
  EXPECT_FALSE(r->HasGroup("nothing/here"));
  EXPECT_FALSE(r->HasGroup("params/model.norm.weight"));  // a dataset, not a group
  EXPECT_EQ(r->ListGroup("optimizer/exp_avg").size(), 2u);
  EXPECT_TRUE(
      SameBytes(r->ReadFromGroup("optimizer/exp_avg", "big"), Iota({700, 513}, DType::kF32)));
  const Attributes trainer = r->GroupAttributes("trainer");
  EXPECT_EQ(std::get<int64_t>(trainer.at("step")), 42);
  EXPECT_THAT(ErrorOf([&] { r->ReadFromGroup("optimizer/exp_avg", "absent"); }),
              HasSubstr("state.h5: tensor 'absent' of group /optimizer/exp_avg is absent"));
  EXPECT_THAT(ErrorOf([&] { r->GroupAttributes("optimizer/master"); }),
              HasSubstr("group /optimizer/master is absent"));
}

// A writer killed before its rename leaves "<path>.tmp-<pid>"; the next writer of that path
// removes it once its process is gone, and leaves a live writer's file alone.
TEST_F(Hdf5CheckpointTest, AbandonedTemporariesOfDeadWritersAreRemoved) {
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);  // reaped: that pid is gone
  const std::string path = (dir_ / "model.h5").string();
  const std::string dead = path + ".tmp-" + std::to_string(child);
  const std::string live = path + ".tmp-" + std::to_string(getppid());
  const std::string other = (dir_ / "other.h5.tmp-").string() + std::to_string(child);
  for (const std::string& f : {dead, live, other}) std::ofstream(f) << "half a checkpoint";
  Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(live)) << "a live process may still be writing it";
  EXPECT_TRUE(fs::exists(other)) << "another path's temporary is not this writer's business";
  w.Write("x", Iota({2}, DType::kF32));
  w.Commit();
  EXPECT_TRUE(fs::exists(path));
}

// Files written by other tools (h5py with numpy bytes, h5py's defaults for some types) carry
// fixed-length strings and narrower numbers; HDF5 cannot convert those to variable-length
// strings, so they are read separately.
TEST_F(Hdf5CheckpointTest, FixedLengthStringsAndNarrowNumbersFromOtherToolsRead) {
  const std::string path = (dir_ / "foreign.h5").string();
  {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    auto fixed = [](hid_t obj, const char* name, std::vector<std::string> items, bool scalar,
                    size_t width, H5T_str_t pad) {
      const hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, width);
      H5Tset_strpad(type, pad);
      const hsize_t n = items.size();
      const hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr);
      std::string buffer(width * std::max<size_t>(n, 1), pad == H5T_STR_SPACEPAD ? ' ' : '\0');
      for (size_t i = 0; i < n; ++i) buffer.replace(i * width, items[i].size(), items[i]);
      const hid_t attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
      if (n > 0) H5Awrite(attr, type, buffer.data());
      H5Aclose(attr), H5Sclose(space), H5Tclose(type);
    };
    fixed(f, "format", {"gemmapod-checkpoint"}, true, 19, H5T_STR_NULLPAD);
    const hid_t one = H5Screate(H5S_SCALAR);
    const int32_t version = 1;
    const hid_t va = H5Acreate2(f, "format_version", H5T_STD_I32LE, one, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(va, H5T_NATIVE_INT32, &version);
    const hid_t config = H5Gcreate2(f, "config", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    fixed(config, "name", {"gemma"}, true, 8, H5T_STR_NULLPAD);
    fixed(config, "padded", {"ab"}, true, 6, H5T_STR_SPACEPAD);
    fixed(config, "kinds", {"sliding", "global"}, false, 7, H5T_STR_NULLTERM);
    fixed(config, "none", {}, false, 4, H5T_STR_NULLPAD);
    const float eps = 0.5f;
    const hid_t ea = H5Acreate2(config, "eps", H5T_IEEE_F32LE, one, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(ea, H5T_NATIVE_FLOAT, &eps);
    const hid_t params = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(params), H5Aclose(ea), H5Gclose(config), H5Aclose(va), H5Sclose(one), H5Fclose(f);
  }
  const auto r = Hdf5CheckpointReader::Open(path);
  const Attributes want = {{"name", std::string("gemma")},
                           {"padded", std::string("ab")},
                           {"kinds", std::vector<std::string>{"sliding", "global"}},
                           {"none", std::vector<std::string>{}},
                           {"eps", 0.5}};
  EXPECT_EQ(r->config(), want);
}

TEST_F(Hdf5CheckpointTest, SlicesAlongAnyDimensionAreExact) {
  const auto r = Hdf5CheckpointReader::Open(WriteSample());
  const Tensor big = r->Read("big");
  const Tensor rows = r->ReadSlice("big", 0, 100, 357);  // crosses chunk boundaries
  ASSERT_EQ(rows.shape(), (Shape{257, 513}));
  EXPECT_EQ(std::memcmp(rows.raw(), big.Slice(100, 357).raw(), rows.nbytes()), 0);
  const Tensor cols = r->ReadSlice("model.embed_tokens.weight", 1, 1, 4);
  const Tensor all = r->Read("model.embed_tokens.weight");
  ASSERT_EQ(cols.shape(), (Shape{6, 3}));
  for (int64_t i = 0; i < 6; ++i) {
    for (int64_t j = 0; j < 3; ++j) {
      EXPECT_EQ(cols.data<BF16>()[i * 3 + j].bits, all.data<BF16>()[i * 5 + j + 1].bits);
    }
  }
  EXPECT_THAT(ErrorOf([&] { r->ReadSlice("big", 1, 500, 514); }),
              HasSubstr("tensor 'big' of shape [700, 513]: slice [500, 514) of dimension 1 is out "
                        "of range"));
  EXPECT_THAT(ErrorOf([&] { r->Read("absent"); }), HasSubstr("no tensor named 'absent'"));
}

TEST_F(Hdf5CheckpointTest, UncommittedWriterLeavesNothing) {
  const fs::path path = dir_ / "never.h5";
  {
    Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path.string());
    w.Write("a", Iota({2}, DType::kF32));
    EXPECT_THAT(ErrorOf([&] { w.Write("a", Iota({2}, DType::kF32)); }), HasSubstr("written twice"));
    EXPECT_THAT(ErrorOf([&] { w.Write("x/y", Iota({2}, DType::kF32)); }),
                HasSubstr("invalid name"));
  }  // destroyed without Commit, as when an exception unwinds a conversion
  EXPECT_TRUE(fs::is_empty(dir_)) << "left: " << fs::directory_iterator(dir_)->path();
}

TEST_F(Hdf5CheckpointTest, CommitReplacesAnOldFileOnlyWhenDone) {
  const std::string path = WriteSample();
  {
    Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
    w.Write("only", Iota({2}, DType::kF32));
    // Before Commit the old checkpoint is still whole.
    EXPECT_EQ(Hdf5CheckpointReader::Open(path)->List().size(), tensors_.size());
    w.Commit();
  }
  EXPECT_EQ(Hdf5CheckpointReader::Open(path)->List().size(), 1u);
}

TEST_F(Hdf5CheckpointTest, FlippedByteFailsItsChecksum) {
  const std::string path = WriteSample();
  // Find the bytes of the small f32 tensor in the file and flip one of them.
  const Tensor norm = tensors_[1].second;
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const size_t at = bytes.find(std::string(static_cast<const char*>(norm.raw()), norm.nbytes()));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] ^= 0x10;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  const auto r = Hdf5CheckpointReader::Open(path);
  EXPECT_THAT(ErrorOf([&] { r->Read("model.norm.weight"); }),
              HasSubstr("tensor 'model.norm.weight': checksum mismatch"));
  EXPECT_THAT(ErrorOf([&] { r->VerifyAll(); }), HasSubstr("checksum mismatch"));
  EXPECT_TRUE(SameBytes(r->Read("ids"), tensors_[2].second));  // the rest still reads
}

TEST_F(Hdf5CheckpointTest, DamagedAndForeignFilesAreNamed) {
  const std::string path = WriteSample();
  const std::string truncated = (dir_ / "truncated.h5").string();
  fs::copy_file(path, truncated);
  fs::resize_file(truncated, fs::file_size(path) / 2);
  EXPECT_THAT(ErrorOf([&] {
                const auto r = Hdf5CheckpointReader::Open(truncated);
                r->VerifyAll();
              }),
              HasSubstr("truncated.h5"));
  const std::string text = (dir_ / "text.h5").string();
  std::ofstream(text) << "not hdf5";
  EXPECT_THAT(ErrorOf([&] { Hdf5CheckpointReader::Open(text); }),
              HasSubstr("text.h5: not an HDF5 file"));
  EXPECT_THAT(ErrorOf([&] { Hdf5CheckpointReader::Open((dir_ / "absent.h5").string()); }),
              HasSubstr("absent.h5: no such file"));
}

// Crafted files (found in review): an attribute that is an array where one integer belongs once
// overran a stack variable; links to other files must not be followed.
TEST_F(Hdf5CheckpointTest, CraftedMetadataIsRefused) {
  const std::string path = (dir_ / "crafted.h5").string();
  auto make = [&](bool array_version, bool soft_link) {
    const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    const hid_t one = H5Screate(H5S_SCALAR);
    const char* format = "gemmapod-checkpoint";
    const hid_t fa = H5Acreate2(f, "format", type, one, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(fa, type, &format);
    const std::vector<int64_t> versions(4096, 1);
    const hsize_t n = array_version ? versions.size() : 1;
    const hid_t space = H5Screate_simple(1, &n, nullptr);
    const hid_t va = H5Acreate2(f, "format_version", H5T_STD_I64LE, array_version ? space : one,
                                H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(va, H5T_NATIVE_INT64, versions.data());
    const hid_t params = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (soft_link) H5Lcreate_external("/etc/other.h5", "/x", params, "w", H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(params), H5Aclose(va), H5Sclose(space), H5Aclose(fa), H5Sclose(one), H5Tclose(type);
    H5Fclose(f);
  };
  make(true, false);
  EXPECT_THAT(ErrorOf([&] { Hdf5CheckpointReader::Open(path); }),
              HasSubstr("attribute 'format_version' must be one integer"));
  make(false, true);
  EXPECT_THAT(ErrorOf([&] { Hdf5CheckpointReader::Open(path); }),
              HasSubstr("/params/w is a link, not a dataset"));
}

}  // namespace
}  // namespace gemmapod
