// The benchmarks of qlt_gpu_bench, one file each; bench_main.cpp picks them with --kernel.
// Each prints, per configuration, a device-to-device copy of the same bytes and then the
// kernel's line (GB/s of bytes read + written, and the ratio to the copy's GB/s).
#pragma once

#include <cstdint>

#include "bench_util.h"

namespace qlt::bench {

// kernels/nf4_dequantize.cu: a rows x cols weight to bf16 / fp16 / fp32, +- double quant.
void bench_nf4_dequantize(BenchContext& ctx, int64_t rows, int64_t cols, int block);
// kernels/int4_dequantize.cu: a rows x cols weight in groups of `group` to bf16 / fp16 / fp32.
void bench_int4_dequantize(BenchContext& ctx, int64_t rows, int64_t cols, int group);
// kernels/adamw_8bit.cu: one fused 8-bit AdamW step of a rows x cols fp32 parameter.
void bench_adamw_8bit(BenchContext& ctx, int64_t rows, int64_t cols);

}  // namespace qlt::bench
