#include "training/tensor_parallel.h"

#include <cstring>

#include "runtime/comm/communicator.h"
#include "runtime/error.h"

namespace gemmapod {
namespace {

constexpr int kPartTag = 7302;

// Rows and row length (in bytes) of a tensor seen as [dim 0, everything else].
struct Rows {
  int64_t rows, row_bytes;
};
Rows RowsOf(const Tensor& t) {
  const int64_t rows = t.shape().empty() ? 1 : t.dim(0);
  return {rows, rows > 0 ? static_cast<int64_t>(t.nbytes()) / rows : 0};
}

// Copies `part` (rank's slice) into `whole`: rows [begin, end) of dim 0, or columns [begin, end)
// of dim 1 of a matrix.
void Place(const Tensor& part, const ParameterSlice& slice, Tensor& whole) {
  auto* to = static_cast<char*>(whole.raw());
  const auto* from = static_cast<const char*>(part.raw());
  if (slice.dim == 0) {
    const int64_t row_bytes = RowsOf(whole).row_bytes;
    std::memcpy(to + slice.begin * row_bytes, from,
                static_cast<size_t>((slice.end - slice.begin) * row_bytes));
    return;
  }
  GEMMAPOD_CHECK(slice.dim == 1 && whole.shape().size() == 2,
                 "tensor parallelism: a part split "
                 "along dimension ",
                 slice.dim, " of ", whole.Describe());
  const int64_t elem = static_cast<int64_t>(DTypeSize(whole.dtype()));
  const int64_t cols = whole.dim(1), width = slice.end - slice.begin;
  for (int64_t r = 0; r < whole.dim(0); ++r) {
    std::memcpy(to + (r * cols + slice.begin) * elem, from + r * width * elem,
                static_cast<size_t>(width * elem));
  }
}

}  // namespace

Tensor GatherWhole(Communicator& tp, const Tensor& mine, const Shape& shape,
                   const std::vector<ParameterSlice>& slices) {
  GEMMAPOD_CHECK(tp.rank() == 0 && static_cast<int>(slices.size()) == tp.size(),
                 "GatherWhole: called on rank ", tp.rank(), " with ", slices.size(), " slices");
  if (slices[0].dim < 0) return mine;  // replicated: rank 0's copy is the tensor
  Tensor whole = Tensor::Empty(shape, mine.dtype());
  for (int r = 0; r < tp.size(); ++r) {
    const ParameterSlice& s = slices[static_cast<size_t>(r)];
    if (r == 0) {
      Place(mine, s, whole);
      continue;
    }
    Shape part_shape = shape;
    part_shape[static_cast<size_t>(s.dim)] = s.padded_end - s.begin;
    Tensor part = Tensor::Empty(part_shape, mine.dtype());
    tp.Recv(part, r, kPartTag);
    Place(part, s, whole);
  }
  return whole;
}

void SendPart(Communicator& tp, const Tensor& mine, const ParameterSlice& slice) {
  if (slice.dim >= 0) tp.Send(mine, 0, kPartTag);
}

Tensor CutPart(const Tensor& whole, const ParameterSlice& slice) {
  if (slice.dim < 0) return whole;
  Shape shape = whole.shape();
  shape[static_cast<size_t>(slice.dim)] = slice.padded_end - slice.begin;
  Tensor part = Tensor::Zeros(shape, whole.dtype());
  auto* to = static_cast<char*>(part.raw());
  const auto* from = static_cast<const char*>(whole.raw());
  if (slice.dim == 0) {
    const int64_t row_bytes = RowsOf(whole).row_bytes;
    std::memcpy(to, from + slice.begin * row_bytes,
                static_cast<size_t>((slice.end - slice.begin) * row_bytes));
    return part;
  }
  const int64_t elem = static_cast<int64_t>(DTypeSize(whole.dtype()));
  const int64_t cols = whole.dim(1), width = slice.end - slice.begin;
  for (int64_t r = 0; r < whole.dim(0); ++r) {
    std::memcpy(to + r * width * elem, from + (r * cols + slice.begin) * elem,
                static_cast<size_t>(width * elem));
  }
  return part;
}

}  // namespace gemmapod
