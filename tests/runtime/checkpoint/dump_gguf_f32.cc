// Writes every tensor of a GGUF file that gemmapod can dequantize to stdout as raw little-endian
// f32, in file order, for tools/golden/compare_gguf_with_gguf_py.py to compare with gguf-py's
// dequantization (a check on real models, not run in CI). The time spent dequantizing goes to
// stderr.
#include <chrono>
#include <cstdio>
#include <exception>

#include "runtime/checkpoint/gguf.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s model.gguf > values.f32\n", argv[0]);
    return 2;
  }
  try {
    const gemmapod::GgufFile file(argv[1]);
    double seconds = 0;
    int64_t elements = 0;
    for (const gemmapod::GgufTensorInfo& t : file.tensors()) {
      if (!gemmapod::CanDequantize(t.type)) continue;
      const auto start = std::chrono::steady_clock::now();
      const gemmapod::Tensor values = file.Dequantize(t.name);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      elements += values.numel();
      if (std::fwrite(values.raw(), 1, values.nbytes(), stdout) != values.nbytes()) {
        std::fprintf(stderr, "write failed\n");
        return 1;
      }
    }
    std::fprintf(stderr, "dequantized %lld elements in %.2f s\n", static_cast<long long>(elements),
                 seconds);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
