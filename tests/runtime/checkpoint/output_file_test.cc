// Outputs replace only regular files: a link is followed (and stays a link), a FIFO, a device or
// a directory is refused by name, and every writer goes through the same check.
#include "runtime/checkpoint/output_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/checkpoint/hdf5_checkpoint.h"
#include "runtime/checkpoint/npy.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

class OutputFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("output-file-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string At(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string ErrorOf(const std::string& path) {
  try {
    OutputTarget(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(OutputFileTest, RegularFilesAndNewNamesAreThemselves) {
  EXPECT_EQ(OutputTarget(At("new.h5")), At("new.h5"));
  std::ofstream(At("old.npy")) << "x";
  EXPECT_EQ(OutputTarget(At("old.npy")), At("old.npy"));
}

TEST_F(OutputFileTest, LinksAreFollowedAndStayLinks) {
  std::ofstream(At("target.npy")) << "x";
  fs::create_symlink("target.npy", At("link.npy"));  // relative to the link's directory
  fs::create_symlink(At("link.npy"), At("link2.npy"));
  EXPECT_EQ(OutputTarget(At("link2.npy")), At("target.npy"));
  WriteNpy(At("link2.npy"), Tensor::Zeros({3}, DType::kF32));
  EXPECT_TRUE(fs::is_symlink(At("link.npy")));
  EXPECT_TRUE(fs::is_symlink(At("link2.npy")));
  EXPECT_EQ(ReadNpy(At("target.npy")).dim(0), 3);
  fs::create_symlink(At("nowhere/missing.npy"), At("dangling.npy"));
  EXPECT_EQ(OutputTarget(At("dangling.npy")), At("nowhere/missing.npy"));
  fs::create_symlink(At("loop-a"), At("loop-b"));
  fs::create_symlink(At("loop-b"), At("loop-a"));
  EXPECT_NE(ErrorOf(At("loop-a")).find("too many levels of symbolic links"), std::string::npos);
}

TEST_F(OutputFileTest, FifosDevicesAndDirectoriesAreRefusedByName) {
  ASSERT_EQ(mkfifo(At("fifo").c_str(), 0600), 0);
  EXPECT_EQ(ErrorOf(At("fifo")),
            At("fifo") +
                " is a FIFO; outputs are written only over regular files (they replace "
                "what the name holds)");
  EXPECT_NE(ErrorOf("/dev/null").find("/dev/null is a character device"), std::string::npos);
  fs::create_directories(At("dir"));
  EXPECT_NE(ErrorOf(At("dir")).find("is a directory"), std::string::npos);
  fs::create_symlink("/dev/null", At("null-link"));
  EXPECT_NE(ErrorOf(At("null-link")).find("(a link to /dev/null) is a character device"),
            std::string::npos);
  // Every writer checks first: nothing is created beside them, nothing replaced.
  EXPECT_THROW(WriteNpy(At("fifo"), Tensor::Zeros({1}, DType::kF32)), Error);
  EXPECT_THROW(Hdf5CheckpointWriter::Create(At("fifo")), Error);
  struct stat st {};
  ASSERT_EQ(lstat(At("fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  ASSERT_EQ(stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator{}),
            3);  // fifo, dir, null-link
}

}  // namespace
}  // namespace gemmapod
