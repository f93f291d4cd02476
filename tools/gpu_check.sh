#!/usr/bin/env bash
# Runs the CUDA/NCCL backend tests (tests/runtime/cuda) on a GPU machine that lacks the project's
# build dependencies (oneDNN, Open MPI, GoogleTest, ...), such as a bare cloud GPU image.
#
# Two steps, on two machines:
#   tools/gpu_check.sh pack          on the development machine (x86-64 Debian with the CUDA
#                                    toolkit and tools/install_deps.sh's packages):
#                                    builds the two CUDA test binaries in $BUILD_DIR (default
#                                    build-gpu) and writes $BUILD_DIR/gpu-bundle.tar.gz with the
#                                    binaries, the non-CUDA shared libraries they load, and a
#                                    relocatable copy of Open MPI (mpiexec, orted, plugins).
#   tools/gpu_check.sh run [BUNDLE]  on the GPU machine, from the repository root: unpacks the
#                                    bundle to a temporary folder, finds the CUDA runtime, cuBLAS
#                                    and NCCL already installed there (CUDA toolkit or the pip
#                                    nvidia-* wheels), prints the GPU, and runs cuda_backend_test
#                                    and nccl_communicator_test on 1 and 2 ranks (2 ranks skip on
#                                    a single-GPU machine: NCCL puts one rank per GPU).
#                                    GPU_CHECK_SANITIZE=1 also runs cuda_backend_test under
#                                    compute-sanitizer's memcheck; GPU_CHECK_KEEP=1 keeps the
#                                    unpacked bundle.
# CUDA libraries are not bundled (cuBLAS and NCCL alone are ~800 MB); the GPU machine must have a
# CUDA 13.x runtime, cuBLAS 13 and NCCL 2, and glibc/libstdc++ at least as new as the build
# machine's (Debian 12: glibc 2.36, GCC 12). Exit status: non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-gpu}
tests=(cuda_backend_test nccl_communicator_test)

# Libraries every Linux GPU machine provides, or that must come from its own CUDA install.
system_libs='/(ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|libcuda|libcudart|libcublas|libcublasLt|libnccl|libnvidia-[a-z-]*)\.so'

pack() {
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build_dir" -j"$(nproc)" --target "${tests[@]}"
  local stage="$build_dir/gpu-bundle"
  rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib" "$stage/ompi/bin"
  for t in "${tests[@]}"; do cp "$build_dir/tests/runtime/cuda/$t" "$stage/bin/"; done
  # Open MPI (Debian's layout) under a prefix of its own, which OPAL_PREFIX relocates.
  mkdir -p "$stage/ompi/lib/x86_64-linux-gnu" "$stage/ompi/share"
  cp -a /usr/lib/x86_64-linux-gnu/openmpi "$stage/ompi/lib/x86_64-linux-gnu/"
  cp -a /usr/share/openmpi "$stage/ompi/share/"
  cp -L /usr/bin/orterun "$stage/ompi/bin/mpiexec"
  cp -L /usr/bin/orted "$stage/ompi/bin/orted"
  # Every shared library the binaries, mpiexec/orted and the MPI plugins load, minus the above.
  ldd "$stage"/bin/* "$stage"/ompi/bin/* "$stage"/ompi/lib/x86_64-linux-gnu/openmpi/lib/openmpi3/*.so \
    2>/dev/null | awk '/=> \// {print $3}' | sort -u | grep -Ev "$system_libs" |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done
  tar -C "$build_dir" -czf "$build_dir/gpu-bundle.tar.gz" gpu-bundle
  du -h "$build_dir/gpu-bundle.tar.gz"
}

# Folders holding the CUDA runtime, cuBLAS and NCCL on this machine.
cuda_lib_dirs() {
  local lib dirs=()
  for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
    local hit
    hit=$(find /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets /usr/lib \
      /opt /usr/local/lib -name "$lib" 2>/dev/null | head -n1 || true)
    if [[ -z $hit ]]; then
      echo "gpu_check: $lib not found on this machine" >&2
      return 1
    fi
    dirs+=("$(dirname "$hit")")
  done
  printf '%s\n' "${dirs[@]}" | sort -u | paste -sd:
}

# timed LABEL COMMAND...: runs COMMAND, then prints LABEL, its exit status and wall time.
timed() {
  local label=$1 start rc=0
  shift
  start=$EPOCHREALTIME
  "$@" || rc=$?
  awk -v l="$label" -v rc="$rc" -v a="$start" -v b="$EPOCHREALTIME" \
    'BEGIN {printf "== %s: exit %d, %.2f s\n", l, rc, b - a}'
  return "$rc"
}

run() {
  local bundle=${1:-$build_dir/gpu-bundle.tar.gz}
  local root
  root=$(mktemp -d)
  tar -C "$root" -xzf "$bundle"
  local b="$root/gpu-bundle"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv || true
  local cuda_dirs
  cuda_dirs=$(cuda_lib_dirs)
  echo "CUDA libraries from: $cuda_dirs"
  export LD_LIBRARY_PATH="$b/lib:$b/ompi/lib/x86_64-linux-gnu/openmpi/lib:$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export OPAL_PREFIX="$b/ompi" PATH="$b/ompi/bin:$PATH"
  # PMIx still looks for its optional plugins (compression, resource managers) in the folder it was
  # built for; where the machine has another PMIx there, they fail to load, harmlessly (mpiexec
  # prints "unable to open ... pmix_mca_pcompress_zlib" per process; the banner is silenced).
  export PMIX_MCA_mca_base_component_show_load_errors=0 PMIX_MCA_pcompress_base_silence_warning=1
  # The same settings as cmake/Testing.cmake's MPI tests: root, one node, shared memory only.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none
  export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_btl_vader_single_copy_mechanism=none
  export OMP_NUM_THREADS=2
  local status=0
  timed cuda_backend_test "$b/bin/cuda_backend_test" || status=1
  for n in 1 2; do
    timed "nccl_communicator_test np$n" mpiexec -n "$n" "$b/bin/nccl_communicator_test" || status=1
  done
  if [[ -n ${GPU_CHECK_SANITIZE:-} ]]; then
    timed "compute-sanitizer memcheck cuda_backend_test" compute-sanitizer --tool memcheck \
      --error-exitcode 1 "$b/bin/cuda_backend_test" || status=1
  fi
  [[ -n ${GPU_CHECK_KEEP:-} ]] || rm -rf "$root"
  return "$status"
}

case "${1:-}" in
  pack) pack ;;
  run) shift && run "$@" ;;
  *)
    echo "usage: $0 pack | run [bundle.tar.gz]" >&2
    exit 2
    ;;
esac
