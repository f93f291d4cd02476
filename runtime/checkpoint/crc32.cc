#include "runtime/checkpoint/crc32.h"

#include <zlib.h>

#include <algorithm>

namespace gemmapod {

uint32_t Crc32(const void* data, size_t n) { return Crc32Update(0, data, n); }

uint32_t Crc32Update(uint32_t running, const void* data, size_t n) {
  uLong crc = running;
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

uint32_t Crc32Combine(uint32_t crc_a, uint32_t crc_b, int64_t length_b) {
  return static_cast<uint32_t>(crc32_combine64(crc_a, crc_b, static_cast<z_off64_t>(length_b)));
}

}  // namespace gemmapod
