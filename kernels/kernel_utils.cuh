// Helpers shared by the .cu files of kernels/ (internal: not part of kernels.h).
//
// Bit-exactness with the CPU reference (src/quant/nf4.cpp, compiled with -ffp-contract=off)
// rests on three rules followed by every kernel:
//   - every fp32 operation that the reference rounds separately is an explicit _rn intrinsic
//     (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn), which nvcc never fuses into an FMA;
//   - no flush-to-zero: the partial-block absmax 1e-38f is subnormal. kernels/CMakeLists.txt
//     refuses -ftz=true / --use_fast_math, which would turn even __fmul_rn into mul.rn.ftz;
//   - max and clamp have std::max / std::clamp semantics (the NaN cases then agree too).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda_check.h"
#include "kernels.h"
#include "nf4_layout.h"

namespace qlt::kernels::detail {

// ---- device helpers ---------------------------------------------------------------------

// std::max(a, b): b only when a < b (a NaN b is ignored, as in the reference loops).
__device__ __forceinline__ float max_like_std(float a, float b) { return a < b ? b : a; }

// std::clamp(v, -1, 1): NaN stays NaN.
__device__ __forceinline__ float clamp_unit(float v) {
  return v < -1.0f ? -1.0f : (1.0f < v ? 1.0f : v);
}

// Exact widening of the input element types to fp32.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Max over a warp (all 32 lanes must call it).
__device__ __forceinline__ float warp_max(float a) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    a = max_like_std(a, __shfl_xor_sync(0xffffffffu, a, offset));
  }
  return a;
}

// ---- host helpers -----------------------------------------------------------------------

[[noreturn]] inline void invalid_argument(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string("qlt::kernels::") + op + ": " + what);
}

inline void check_block_size(const char* op, int block_size) {
  const bool power_of_two = block_size > 0 && (block_size & (block_size - 1)) == 0;
  if (!power_of_two || block_size < nf4::kMinBlockSize || block_size > nf4::kMaxBlockSize) {
    invalid_argument(
        op, "block_size " + std::to_string(block_size) + " is not a power of two in [32, 4096]");
  }
}

inline void check_count(const char* op, const char* name, int64_t n) {
  if (n < 0) invalid_argument(op, std::string(name) + " = " + std::to_string(n) + " < 0");
}

inline void check_pointer(const char* op, const char* name, const void* p) {
  if (p == nullptr) invalid_argument(op, std::string(name) + " is null");
}

inline int log2_of_power_of_two(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

// Enough blocks of `threads` threads to fill the current device once (grid-stride kernels
// loop over the rest), capped by `needed`; at least 1.
inline unsigned grid_for(int64_t needed, int threads) {
  int device = 0, sms = 0;
  QLT_CUDA_CHECK(cudaGetDevice(&device));
  QLT_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t resident = static_cast<int64_t>(sms) * (2048 / threads);
  const int64_t grid = needed < resident ? needed : resident;
  return static_cast<unsigned>(grid < 1 ? 1 : grid);
}

}  // namespace qlt::kernels::detail
