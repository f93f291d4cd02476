// Checkpoint I/O benchmark: write and read back a weight-sized tensor in f32 and bf16 through our
// HDF5 format (whole-tensor reads verify the crc32; hyperslab reads are what a tensor-parallel
// rank does), next to a plain file write/read of the same bytes as the machine's own limit.
// Prints a markdown table (docs/checkpoint-format.md). Reads come from the page cache.
//
//   build/bench/checkpoint_bench [--mib N] [--dir D]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "runtime/checkpoint/hdf5_checkpoint.h"

namespace gemmapod {
namespace {

double Seconds(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int Main(int argc, char** argv) {
  int64_t mib = 256;
  std::string dir = std::filesystem::temp_directory_path().string();
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mib") == 0) mib = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
  }
  const std::string path = dir + "/checkpoint_bench_" + std::to_string(getpid()) + ".h5";
  const int64_t cols = 4096;
  const int64_t rows = (mib << 20) / (cols * 4);
  Tensor f32 = Tensor::Empty({rows, cols}, DType::kF32);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (int64_t i = 0; i < f32.numel(); ++i) f32.data<float>()[i] = normal(rng);
  const Tensor bf16 = f32.To(DType::kBF16);

  std::printf(
      "| tensor | bytes | write | read (crc checked) | read half the rows | read half the "
      "columns |\n|---|---|---|---|---|---|\n");
  const std::string raw = path + ".raw";
  const double raw_write = Seconds([&] {
    std::ofstream out(raw, std::ios::binary);
    out.write(static_cast<const char*>(f32.raw()), static_cast<std::streamsize>(f32.nbytes()));
    out.flush();
  });
  std::string back(f32.nbytes(), '\0');
  const double raw_read = Seconds([&] {
    std::ifstream in(raw, std::ios::binary);
    in.read(back.data(), static_cast<std::streamsize>(back.size()));
  });
  std::filesystem::remove(raw);
  auto rate = [](size_t bytes, double s) { return bytes / s / 1e6; };
  std::printf("| plain file (limit) | %.0f MiB | %.0f MB/s | %.0f MB/s | | |\n",
              f32.nbytes() / 1048576.0, rate(f32.nbytes(), raw_write),
              rate(f32.nbytes(), raw_read));
  for (const Tensor* t : {static_cast<const Tensor*>(&f32), &bf16}) {
    const double write = Seconds([&] {
      Hdf5CheckpointWriter w = Hdf5CheckpointWriter::Create(path);
      w.Write("w", *t);
      w.Commit();
    });
    const auto reader = Hdf5CheckpointReader::Open(path);
    // The first read of a process also pays the kernel for zeroing fresh pages of the
    // destination; time a second one, as a loader that reuses memory sees it.
    reader->Read("w");
    const double read = Seconds([&] { reader->Read("w"); });
    const double half_rows = Seconds([&] { reader->ReadSlice("w", 0, 0, rows / 2); });
    const double half_cols = Seconds([&] { reader->ReadSlice("w", 1, 0, cols / 2); });
    std::printf("| %s [%lld, %lld] | %.0f MiB | %.0f MB/s | %.0f MB/s | %.0f MB/s | %.0f MB/s |\n",
                DTypeName(t->dtype()).data(), static_cast<long long>(rows),
                static_cast<long long>(cols), t->nbytes() / 1048576.0, rate(t->nbytes(), write),
                rate(t->nbytes(), read), rate(t->nbytes() / 2, half_rows),
                rate(t->nbytes() / 2, half_cols));
    std::filesystem::remove(path);
  }
  return 0;
}

}  // namespace
}  // namespace gemmapod

int main(int argc, char** argv) { return gemmapod::Main(argc, argv); }
