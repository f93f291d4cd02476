// .npy: what we write numpy reads, and what numpy writes we read.
#include "runtime/checkpoint/npy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "runtime/error.h"

namespace gemmapod {
namespace {

namespace fs = std::filesystem;

bool HaveNumpy() { return std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") == 0; }

TEST(Npy, RoundTripAndNumpyAgrees) {
  const fs::path dir = fs::temp_directory_path() / ("npy-" + std::to_string(getpid()));
  fs::create_directories(dir);
  Tensor t = Tensor::Empty({3, 5}, DType::kF32);
  for (int64_t i = 0; i < 15; ++i) t.data<float>()[i] = 0.25f * static_cast<float>(i) - 1;
  const std::string ours = (dir / "ours.npy").string();
  WriteNpy(ours, t);
  const Tensor back = ReadNpy(ours);
  ASSERT_EQ(back.shape(), t.shape());
  EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
  if (!HaveNumpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  // numpy reads ours, and writes f8 / i8 arrays we narrow.
  const std::string script =
      "import numpy as np, sys; a = np.load('" + ours +
      "'); assert a.dtype == np.float32 and a.shape == (3, 5) and a[2, 4] == 2.5, a; "
      "np.save('" +
      (dir / "f8.npy").string() +
      "', np.arange(6, dtype=np.float64).reshape(2, 3) / 4); "
      "np.save('" +
      (dir / "i8.npy").string() +
      "', np.array([2, 651, -7], dtype=np.int64)); "
      "np.save('" +
      (dir / "fortran.npy").string() + "', np.asfortranarray(np.ones((2, 3))))";
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"" + script + "\"").c_str()), 0);
  const Tensor f8 = ReadNpy((dir / "f8.npy").string());
  EXPECT_EQ(f8.shape(), (Shape{2, 3}));
  EXPECT_EQ(f8.data<float>()[5], 1.25f);
  const Tensor i8 = ReadNpy((dir / "i8.npy").string());
  EXPECT_EQ(i8.dtype(), DType::kI32);
  EXPECT_EQ(i8.data<int32_t>()[1], 651);
  EXPECT_EQ(i8.data<int32_t>()[2], -7);
  EXPECT_THROW(ReadNpy((dir / "fortran.npy").string()), Error);
  {
    // A header whose shape is not numbers (found by fuzzing: once an uncaught std::stoll error).
    std::string bytes;
    std::ifstream in(ours, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
    bytes.replace(bytes.find("(3, 5)"), 6, "(3, x)");
    std::ofstream(dir / "garbled.npy", std::ios::binary) << bytes;
    try {
      ReadNpy((dir / "garbled.npy").string());
      ADD_FAILURE() << "a garbled shape was read";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("garbled.npy: bad shape entry ' x'"));
    }
  }
  fs::resize_file(ours, fs::file_size(ours) - 4);
  try {
    ReadNpy(ours);
    ADD_FAILURE() << "a truncated file was read";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("ours.npy: truncated"));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gemmapod
