// Checking a whole tensor's stored checksum when no rank read all of it. Each rank of a
// tensor-parallel group holds a slice: rows [begin, end) of the tensor (dim 0), or columns
// [begin, end) of every row (dim 1). Each computes the CRC-32 of its bytes in each contiguous
// run, the group exchanges them, and every rank folds them in the tensor's row-major order
// (zlib's crc32_combine) into the CRC of the whole tensor, then compares it with the file's.
// Slices held by several ranks (replicated key/value heads) count once; every rank reaches the
// same verdict, so a damaged tensor fails the whole group alike.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/tensor.h"

namespace gemmapod {

class Communicator;

// `slice` is this rank's part (only real rows or columns, no padding) of a tensor of `shape`
// sliced along `dim` at [begin, end). Collective over `group`. Throws gemmapod::Error naming
// `what` on a mismatch with `stored_crc`.
void CheckSlicedChecksum(const Tensor& slice, const Shape& shape, int dim, int64_t begin,
                         int64_t end, uint32_t stored_crc, Communicator& group,
                         const std::string& what);

}  // namespace gemmapod
