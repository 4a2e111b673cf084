// CUDA entry points of the INT4 ops (src/quant/int4_cuda.cpp; kernels in kernels/int4_*.cu).
// In a build without CUDA they throw a UserError naming the op (no silent CPU fallback).
#pragma once

#include "quant/int4.h"

namespace qlt::quant {

// weight: CUDA [out, in], fp32/bf16/fp16, in a multiple of options.group_size (checked by
// quantize_int4). Blocks are allocated on weight's device.
Int4Tensor quantize_int4_cuda(const at::Tensor& weight, const Int4Options& options);
// out: contiguous, q.numel() elements, fp32/bf16/fp16, on q's device.
void dequantize_int4_cuda_into(const Int4Tensor& q, at::Tensor& out);

}  // namespace qlt::quant
