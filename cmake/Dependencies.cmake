# Every external dependency, found once. Debian bookworm packages (tools/install_deps.sh).

# CUDA is optional: the CUDA backend builds whenever nvcc is found and is skipped otherwise.
option(GEMMAPOD_ENABLE_CUDA "Build the CUDA/NCCL backend when a CUDA compiler is found" ON)
set(GEMMAPOD_HAVE_CUDA OFF)
if(GEMMAPOD_ENABLE_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)  # A100, H100/H200; "native" fails on machines without a GPU
    endif()
    enable_language(CUDA)
    # CMake learned nvcc's C++20 flag in 3.25.2; bookworm ships 3.25.1.
    if(CMAKE_VERSION VERSION_LESS 3.25.2)
      set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
      set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    endif()
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    # NCCL ships no CMake config; CUDA 13 keeps it inside the toolkit tree.
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_HOME}/include)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_HOME}/lib)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(NCCL::nccl UNKNOWN IMPORTED)
      set_target_properties(NCCL::nccl PROPERTIES IMPORTED_LOCATION "${NCCL_LIBRARY}"
                                                  INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}")
      set(GEMMAPOD_HAVE_CUDA ON)
    else()
      message(STATUS "nvcc found but NCCL not found: CUDA backend skipped")
    endif()
  else()
    message(STATUS "No CUDA compiler found: CPU-only build")
  endif()
endif()
message(STATUS "Gemmapod CUDA backend: ${GEMMAPOD_HAVE_CUDA}")

find_package(MPI REQUIRED COMPONENTS CXX)
# We use the C API only; the deprecated MPI C++ bindings would add warnings and compile time.
add_compile_definitions(OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
find_package(OpenMP REQUIRED)
find_package(Threads REQUIRED)

# Serial HDF5 (C and C++ API). Never mix with the openmpi variant in one binary.
set(HDF5_PREFER_PARALLEL OFF)
find_package(HDF5 REQUIRED COMPONENTS C CXX)

find_package(ZLIB REQUIRED)  # crc32 for checkpoint checksums
find_package(nlohmann_json REQUIRED)  # safetensors headers, Hugging Face config.json

find_package(PkgConfig REQUIRED)
pkg_check_modules(SPM REQUIRED IMPORTED_TARGET sentencepiece)
# Debian builds cpp-httplib as a library (libcpp-httplib.so) with TLS, zlib and brotli enabled.
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)

find_package(yaml-cpp REQUIRED)  # 0.7 names its target `yaml-cpp`; 0.8 adds the namespaced alias
if(TARGET yaml-cpp AND NOT TARGET yaml-cpp::yaml-cpp)
  add_library(yaml-cpp::yaml-cpp ALIAS yaml-cpp)
endif()

find_package(dnnl CONFIG REQUIRED)  # needs ocl-icd-opencl-dev on Debian
find_package(CLI11 CONFIG REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(GTest REQUIRED)
