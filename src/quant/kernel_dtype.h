// The kernels/ element type of an at::ScalarType, for the CUDA entry points of the weight
// formats (nf4_cuda.cpp, int4_cuda.cpp). Only QLT_CUDA builds include it.
#pragma once

#include <ATen/ATen.h>

#include "kernels.h"

namespace qlt::quant {

// fp32 / fp16 / bf16; any other dtype is an error naming `op`.
inline kernels::DType kernel_dtype(at::ScalarType s, const char* op) {
  switch (s) {
    case at::kFloat:
      return kernels::DType::kF32;
    case at::kHalf:
      return kernels::DType::kF16;
    case at::kBFloat16:
      return kernels::DType::kBF16;
    default:
      break;
  }
  TORCH_CHECK(false, op, ": dtype ", s, " is not supported; use float32, bfloat16 or float16");
  return kernels::DType::kF32;  // unreachable
}

}  // namespace qlt::quant
