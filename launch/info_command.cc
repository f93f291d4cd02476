// `gemmapod info`: what this build and this machine offer, for bug reports and for checking a
// node before a job: version, kernel family, threads, MPI library, CUDA devices.
#include <mpi.h>
#include <omp.h>

#include <cstdio>

#include "launch/commands.h"
#include "runtime/cpu/gemv.h"
#ifdef GEMMAPOD_WITH_CUDA
#include "runtime/cuda/cuda_backend.h"
#endif

namespace gemmapod {

int RunInfo() {
  std::printf("gemmapod %s\n", kGemmapodVersion);
  const cpu::CpuIsa detected = cpu::DetectedCpuIsa();
  const cpu::CpuIsa active = cpu::ActiveCpuIsa();
  std::printf("cpu kernels: %s", std::string(cpu::CpuIsaName(active)).c_str());
  if (active != detected) {
    std::printf(" (lowered by GEMMAPOD_CPU_ISA; the CPU supports %s)",
                std::string(cpu::CpuIsaName(detected)).c_str());
  }
  std::printf("\nopenmp threads: %d\n", omp_get_max_threads());
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);  // callable before MPI_Init
  std::string mpi(mpi_version, static_cast<size_t>(len));
  std::printf("mpi: %s\n", mpi.substr(0, mpi.find_first_of(",\n")).c_str());
#ifdef GEMMAPOD_WITH_CUDA
  std::printf("cuda backend: built; %d device(s) visible\n", cuda::DeviceCount());
#else
  std::printf("cuda backend: not built (no nvcc or NCCL at configure time)\n");
#endif
  return 0;
}

}  // namespace gemmapod
