// CUDA entry points of the NF4 ops (src/quant/nf4_cuda.cpp; kernels in kernels/). In a build
// without CUDA they throw a UserError naming the op (no silent CPU fallback).
#pragma once

#include "quant/nf4.h"

namespace qlt::quant {

Nf4Tensor quantize_nf4_cuda(const at::Tensor& weight, const Nf4Options& options);
void dequantize_nf4_cuda_into(const Nf4Tensor& q, at::Tensor& out);

}  // namespace qlt::quant
