// Error checks for CUDA, cuBLAS and NCCL calls: failures become gemmapod::Error naming the call.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "runtime/error.h"

#define GEMMAPOD_CUDA_CHECK(call)                                                           \
  do {                                                                                      \
    cudaError_t gp_err = (call);                                                            \
    if (gp_err != cudaSuccess)                                                              \
      throw ::gemmapod::Error(::gemmapod::StrCat(#call, ": ", cudaGetErrorString(gp_err))); \
  } while (0)

#define GEMMAPOD_CUBLAS_CHECK(call)                                                       \
  do {                                                                                    \
    cublasStatus_t gp_st = (call);                                                        \
    if (gp_st != CUBLAS_STATUS_SUCCESS)                                                   \
      throw ::gemmapod::Error(::gemmapod::StrCat(#call, ": cuBLAS status ", int(gp_st))); \
  } while (0)

#define GEMMAPOD_NCCL_CHECK(call)                                                           \
  do {                                                                                      \
    ncclResult_t gp_res = (call);                                                           \
    if (gp_res != ncclSuccess)                                                              \
      throw ::gemmapod::Error(::gemmapod::StrCat(#call, ": ", ncclGetErrorString(gp_res))); \
  } while (0)
