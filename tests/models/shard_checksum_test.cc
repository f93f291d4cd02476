// Checksums over slices (under mpiexec): the ranks' row or column slices of a matrix combine into
// the whole matrix's CRC-32; a wrong byte anywhere, or two ranks holding the same rows with
// different bytes, fails on every rank alike.
#include "models/shard_checksum.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include "runtime/checkpoint/crc32.h"
#include "runtime/comm/mpi_communicator.h"
#include "tests/error_of.h"

namespace gemmapod {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kRows = 12, kCols = 10;

Tensor Matrix() {
  Tensor t = Tensor::Empty({kRows, kCols}, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i * 7 % 13) - 6;
  return t;
}

// Rows or columns [begin, end) of the matrix, as a rank would read them.
Tensor Slice(const Tensor& m, int dim, int64_t begin, int64_t end) {
  if (dim == 0) return m.Slice(begin, end).Clone();
  Tensor t = Tensor::Empty({kRows, end - begin}, DType::kF32);
  for (int64_t r = 0; r < kRows; ++r) {
    std::memcpy(t.data<float>() + r * (end - begin), m.data<float>() + r * kCols + begin,
                static_cast<size_t>(end - begin) * 4);
  }
  return t;
}

class ShardChecksumTest : public ::testing::Test {
 protected:
  ShardChecksumTest() : world_(MpiCommunicator::World()) {}
  std::unique_ptr<MpiCommunicator> world_;
  const Tensor matrix_ = Matrix();
  const uint32_t crc_ = Crc32(matrix_.raw(), matrix_.nbytes());
};

TEST_F(ShardChecksumTest, RowAndColumnSlicesCombineIntoTheWholeChecksum) {
  const int n = world_->size(), r = world_->rank();
  for (int dim : {0, 1}) {
    const int64_t extent = dim == 0 ? kRows : kCols;
    const int64_t begin = extent * r / n, end = extent * (r + 1) / n;
    const Tensor mine = Slice(matrix_, dim, begin, end);
    EXPECT_NO_THROW(CheckSlicedChecksum(mine, {kRows, kCols}, dim, begin, end, crc_, *world_, "m"));
    EXPECT_THAT(
        ErrorOf([&] {
          CheckSlicedChecksum(mine, {kRows, kCols}, dim, begin, end, crc_ ^ 1, *world_, "m");
        }),
        HasSubstr("m: checksum mismatch"));
  }
}

TEST_F(ShardChecksumTest, CopiesOfTheSameRowsMustAgree) {
  // Ranks hold halves in turn (0 and 2 the first, 1 and 3 the second); with 2 ranks both hold
  // the whole matrix.
  const int n = world_->size(), r = world_->rank();
  const int halves = n >= 4 ? 2 : 1;
  const int64_t begin = kRows * (r % halves) / halves, end = kRows * (r % halves + 1) / halves;
  Tensor mine = Slice(matrix_, 0, begin, end);
  EXPECT_NO_THROW(CheckSlicedChecksum(mine, {kRows, kCols}, 0, begin, end, crc_, *world_, "m"));
  // The last rank's copy differs in one byte: every rank refuses.
  if (r == n - 1) static_cast<char*>(mine.raw())[5] ^= 0x20;
  EXPECT_THAT(ErrorOf([&] {
                CheckSlicedChecksum(mine, {kRows, kCols}, 0, begin, end, crc_, *world_, "m");
              }),
              HasSubstr("read different bytes"));
}

}  // namespace
}  // namespace gemmapod
