// Balanced LoRA (METHODS.md §5; Q-BLoRA / QA-BLoRA, arXiv 2407.17029): a low-rank adapter whose
// input is average-pooled over windows of consecutive features and whose output is repeated,
//   delta(x) = scaling * repeat_features(pool_features(x) A^T B^T, repeat),
//   A [R, in / pool], B [out / repeat, R], fp32.
// Three instances of the same math:
//   - plain LoRA (METHODS.md §4): pool = repeat = 1;
//   - Q-BLoRA with balance factor λ and LoRA rank r: pool = repeat = λ, R = λ r,
//     scaling = alpha / r (the rank-r scaling of the paper, NOT alpha / R);
//   - QA-BLoRA over an INT4 base with groups of g inputs (quant/int4.h): pool = g,
//     repeat = λ_out. The update is then constant inside every quantization group and folds
//     into the group offsets m (merge_into_int4_offsets): the merged model is pure INT4.
//     (The authors' QA variant uses one matrix [out / λ_out, in / g]; the factored A, B here
//     contain it: R = min(out / λ_out, in / g) makes every such matrix a B A.)
//
// Every pooled adapter IS a standard LoRA of rank R (expand_pooled_lora):
//   A' = A P  [R, in],   P [in / pool, in] the averaging matrix: A'[:, i] = A[:, i / pool] / pool,
//   B' = Rep B [out, R], Rep [out, out / repeat] the repeat matrix: B'[o, :] = B[o / repeat, :],
// so delta(x) = scaling * x A'^T B'^T, it merges exactly, and it exports as a PEFT LoRA adapter
// of rank R with lora_alpha chosen so that PEFT's scaling lora_alpha / R equals `scaling`
// (for Q-BLoRA: lora_alpha = alpha * λ). The 1/pool factor is part of the math (the authors'
// merge.py drops it).
//
// The weight update ΔW = scaling * B' A' is constant inside every pooling window:
//   ΔW[o, i] = window_delta[o, i / pool],   window_delta = scaling * (Rep B A) / pool  [out,
//   in/pool].
//
// Shape checks here are internal errors (TORCH_CHECK naming the function and the shapes): the
// configuration is validated where it is read.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "quant/int4.h"

namespace qlt::adapters {

// x [..., in] -> [..., in / p]: the mean over consecutive windows of p features
// (feature j of the result averages x[..., j*p .. j*p + p-1]). p == 1: x itself (same tensor).
// Differentiable. in must be a multiple of p.
at::Tensor pool_features(const at::Tensor& x, int64_t p);

// y [..., n] -> [..., n * k]: each feature repeated k times consecutively (repeat_interleave on
// the last dimension: result[..., j] = y[..., j / k]). k == 1: y itself (same tensor).
// Differentiable.
at::Tensor repeat_features(const at::Tensor& y, int64_t k);

// delta(x) = scaling * repeat_features(pool_features(x) A^T B^T, repeat), x [..., in] ->
// [..., out] with in = A.size(1) * pool, out = B.size(0) * repeat; A [R, in/pool],
// B [out/repeat, R]. x is cast to A's dtype first (PEFT's _cast_input_dtype; the adapter is
// fp32), and the result is in A's dtype. Computed as linear(linear(pool(x), A), B) * scaling,
// then repeated, so with pool = repeat = 1 it is exactly the delta of adapted_linear
// (adapters/lora.h) in eval mode. Differentiable in x, A and B.
at::Tensor pooled_lora_delta(const at::Tensor& x, const at::Tensor& A, const at::Tensor& B,
                             int64_t pool, int64_t repeat, double scaling);

// The same update as a standard LoRA of rank R (see the top of this file):
// A' = A.repeat_interleave(pool, 1) / pool [R, in], B' = B.repeat_interleave(repeat, 0) [out, R].
// delta(x) == scaling * x A'^T B'^T up to float rounding; with pool a power of two A' is exactly
// A's values divided by pool. New tensors (no aliasing of A, B); differentiable.
struct ExpandedLora {
  at::Tensor A;  // [R, in]
  at::Tensor B;  // [out, R]
};
ExpandedLora expand_pooled_lora(const at::Tensor& A, const at::Tensor& B, int64_t pool,
                                int64_t repeat);

// The weight update per pooling window, [out, in / pool] in A's dtype (fp32):
//   result = (B A) * (scaling / pool), rows repeated `repeat` times (row o = row o / repeat),
// so the full update is ΔW[o, i] = result[o, i / pool] (= scaling * (B' A')[o, i] up to float
// rounding). One fp32 rounding after the product: scaling / pool is formed in double first.
// NOTE: takes `pool` (the 1/pool factor needs it; A's shape only gives in / pool).
at::Tensor pooled_lora_window_delta(const at::Tensor& A, const at::Tensor& B, int64_t pool,
                                    int64_t repeat, double scaling);

// QA-BLoRA merge: the INT4 weight with the update folded into its group offsets,
//   m'[o, g] = fp16(fp32(m[o, g]) + window_delta[o, g])   (one fp32 add, then round to nearest
//   even fp16), scales d and the 4-bit codes unchanged (byte-identical),
// so dequantize_int4(result)[o, i] = fp32(d * q) + fp32(m'[o, i / group_size]). Requires the
// pooling window to be the quantization group: window_delta [out, in / base.group_size]
// (fp32, on base's device). Returns a new Int4Tensor (same shape, dtype, group_size, device);
// base is not modified. Exactness: dequant(result) - dequant(base) equals the update ΔW except
// for the rounding of m' to fp16, |m' - (m + δ)| <= 2^-11 |m + δ| (fp16 normal range) or
// <= 2^-25 + 2^-24 |m + δ| (subnormal range) — no re-quantization of the weights. A merged
// offset that overflows fp16 (|m + δ| >= 65520) while m and δ are finite is an internal error.
quant::Int4Tensor merge_into_int4_offsets(const quant::Int4Tensor& base,
                                          const at::Tensor& window_delta);

}  // namespace qlt::adapters
