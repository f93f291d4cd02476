#include "models/shard_checksum.h"

#include <algorithm>
#include <bit>
#include <vector>

#include "runtime/checkpoint/crc32.h"
#include "runtime/comm/communicator.h"
#include "runtime/error.h"

namespace gemmapod {

void CheckSlicedChecksum(const Tensor& slice, const Shape& shape, int dim, int64_t begin,
                         int64_t end, uint32_t stored_crc, Communicator& group,
                         const std::string& what) {
  // A vector sliced along its one dimension (int8 row scales) is a one-column matrix.
  GEMMAPOD_CHECK((shape.size() == 2 && (dim == 0 || dim == 1)) || (shape.size() == 1 && dim == 0),
                 what, ": sliced checksums need a matrix sliced by rows or columns, or a vector");
  const int64_t rows = shape[0], cols = shape.size() == 2 ? shape[1] : 1;
  const int64_t element = static_cast<int64_t>(DTypeSize(slice.dtype()));
  // The contiguous runs of this rank's bytes in the tensor's order: one for a block of rows, one
  // per row for a block of columns.
  const int64_t runs = dim == 0 ? 1 : rows;
  const int64_t run_bytes = dim == 0 ? (end - begin) * cols * element : (end - begin) * element;
  GEMMAPOD_CHECK(static_cast<int64_t>(slice.nbytes()) == runs * run_bytes, what, ": a slice of ",
                 slice.nbytes(), " bytes for [", begin, ", ", end, ")");
  Tensor mine = Tensor::Empty({1, 2 + runs}, DType::kI32);
  int32_t* m = mine.data<int32_t>();
  m[0] = static_cast<int32_t>(begin);
  m[1] = static_cast<int32_t>(end);
  const auto* bytes = static_cast<const char*>(slice.raw());
  for (int64_t r = 0; r < runs; ++r) {
    m[2 + r] = std::bit_cast<int32_t>(Crc32(bytes + r * run_bytes, static_cast<size_t>(run_bytes)));
  }
  Tensor all = Tensor::Empty({group.size(), 2 + runs}, DType::kI32);
  group.AllGather(mine, all);

  // The ranks' ranges in tensor order, each once; together they must tile the dimension.
  struct Piece {
    int64_t begin, end;
    const int32_t* crcs;
  };
  std::vector<Piece> pieces;
  for (int g = 0; g < group.size(); ++g) {
    const int32_t* p = all.data<int32_t>() + g * (2 + runs);
    if (p[0] < p[1]) pieces.push_back({p[0], p[1], p + 2});
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
  // A range several ranks hold (replicated key/value heads) counts once in the whole tensor's
  // CRC, but every copy must carry the same bytes: each rank uses its own.
  std::vector<Piece> order;
  for (const Piece& p : pieces) {
    if (!order.empty() && p.begin == order.back().begin && p.end == order.back().end) {
      GEMMAPOD_CHECK(std::equal(p.crcs, p.crcs + runs, order.back().crcs), what,
                     ": checksum mismatch: ranks holding the same rows [", p.begin, ", ", p.end,
                     ") read different bytes (the file is corrupt, or the ranks read different "
                     "copies of it)");
      continue;
    }
    order.push_back(p);
  }
  const int64_t extent = dim == 0 ? rows : cols;
  int64_t covered = 0;
  for (const Piece& p : order) {
    GEMMAPOD_CHECK(p.begin == covered, what, ": the group's slices do not tile dimension ", dim);
    covered = p.end;
  }
  GEMMAPOD_CHECK(covered == extent, what, ": the group's slices cover ", covered, " of ", extent);

  uint32_t crc = Crc32(nullptr, 0);
  for (int64_t r = 0; r < runs; ++r) {
    for (const Piece& p : order) {
      const int64_t length =
          dim == 0 ? (p.end - p.begin) * cols * element : (p.end - p.begin) * element;
      crc = Crc32Combine(crc, std::bit_cast<uint32_t>(p.crcs[r]), length);
    }
  }
  GEMMAPOD_CHECK(crc == stored_crc, what, ": checksum mismatch (stored crc32 ", stored_crc,
                 ", the tensor-parallel group's slices combine to ", crc, "): the file is corrupt");
}

}  // namespace gemmapod
