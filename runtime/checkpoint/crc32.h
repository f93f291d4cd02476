// CRC-32 (zlib's polynomial) of checkpoint data, and the combination of the CRCs of adjacent
// pieces into the CRC of their concatenation: what lets ranks that each read a slice check the
// checksum of the whole tensor together.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gemmapod {

uint32_t Crc32(const void* data, size_t n);
// Continues a running CRC-32 (start from 0) over more bytes.
uint32_t Crc32Update(uint32_t crc, const void* data, size_t n);
// The CRC of A followed by B, from crc(A), crc(B) and B's length in bytes.
uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, int64_t length_b);

}  // namespace gemmapod
