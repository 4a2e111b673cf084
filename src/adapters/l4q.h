// L4Q (arXiv 2402.04902): LoRA-wise LSQ quantization-aware training (METHODS.md §6).
//
//   W' = W0 + scaling * B A            W0 = the frozen base [out, in], A [r, in], B [out, r]
//   d = fp16(max(scale, 2^-14)), m = fp16(offset)            one pair per group, [out, in/g]
//   u = (W' - m) / d,  q = clamp(round(u), 0, Qp),  Wq = d * q + m       (fp32, [out, in])
//   y = x Wq^T
//
// Groups are g consecutive inputs of a row (as INT4 / GGUF Q4_1, METHODS.md §8). scale and
// offset are the learned LSQ+ step and offset (fp32 leaves); the forward uses their fp16
// roundings d and m, so that the weights a trained layer computes with are exactly the Q4_1
// blocks written on export (l4q_to_int4): with bits 4 and g 32, l4q_dequantize equals
// quant::dequantize_int4 of those blocks bit for bit.
//
// Backward (straight-through estimator with clipping, LSQ gradient scale gs = 1/sqrt(g Qp),
// the fp16 roundings and the clamp of d taken as the identity), G = grad_out^T x [out, in]:
//   dx = grad_out Wq;  M = 1[0 <= u <= Qp];  dA = scaling B^T (M G);  dB = scaling (M G) A^T
//   dscale = gs * sum_group (in range ? round(u) - u : (u < 0 ? 0 : Qp)) G
//   doffset = gs * sum_group (in range ? 0 : G)
// Memory: W', u, the masks and G exist only for a chunk of output rows at a time (at most
// chunk_elements elements, at least one row), in the forward and again in the backward; the
// autograd graph keeps x, A, B, scale, offset and a pointer to the frozen base, never a
// [out, in] weight or weight gradient.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "adapters/frozen_weight.h"
#include "quant/int4.h"

namespace qlt::adapters {

struct L4qQuantizer {
  int64_t bits = 4;         // 3 or 4; codes 0..Qp with Qn = 0, Qp = 2^bits - 1
  int64_t group_size = 32;  // g consecutive inputs of a row share one (scale, offset)
};

// The smallest positive normal fp16 value, 2^-14: the lower bound of d (so that d > 0 and
// u = (W' - m) / d stays finite), and the scale given at init to a group whose values are all
// equal.
inline constexpr double kL4qMinScale = 1.0 / 16384.0;

// Elements of one chunk of output rows in l4q_linear (forward and backward): 2^20.
inline constexpr int64_t kL4qChunkElements = int64_t{1} << 20;

// bits in {3, 4} and group_size >= 1; a UserError naming the value otherwise.
void check_l4q_quantizer(const L4qQuantizer& q);
// Qp = 2^bits - 1 (15 for 4 bits, 7 for 3 bits).
int64_t l4q_qmax(const L4qQuantizer& q);
// The LSQ gradient scale 1 / sqrt(g * Qp).
double l4q_gradient_scale(const L4qQuantizer& q);
// Rows per chunk for a weight with `in_features` inputs: max(1, chunk_elements / in).
int64_t l4q_chunk_rows(int64_t in_features, int64_t chunk_elements = kL4qChunkElements);

struct L4qScaleOffset {
  at::Tensor scale;   // [out, in/g] fp32
  at::Tensor offset;  // [out, in/g] fp32
};

// Min-max init per group of w [out, in] (fp32/bf16/fp16, read as fp32; in a multiple of g):
// scale = (max - min) / Qp, offset = min, both computed in fp32. A group with max == min gets
// scale kL4qMinScale (2^-14). Other scales are returned as computed, even when below 2^-14;
// the forward clamps d (see l4q_codes). New tensors without requires_grad.
L4qScaleOffset l4q_init_scale_offset(const at::Tensor& w, const L4qQuantizer& q);

struct L4qCodes {
  at::Tensor codes;  // [out, in] uint8, 0..Qp
  at::Tensor d;      // [out, in/g] fp16, >= 2^-14
  at::Tensor m;      // [out, in/g] fp16
};

// d = fp16(max(scale, 2^-14)) (round to nearest even; the same as clamping after the
// rounding, as 2^-14 is an fp16 value), m = fp16(offset), and
// codes = clamp(round((w' - fp32(m)) / fp32(d)), 0, Qp) with round half to even (at::round),
// all in fp32. w_prime [out, in] fp32; scale, offset [out, in/g] fp32.
L4qCodes l4q_codes(const at::Tensor& w_prime, const at::Tensor& scale, const at::Tensor& offset,
                   const L4qQuantizer& q);

// Wq = fp32(d) * q + fp32(m), [out, in] fp32: one fp32 multiply and one fp32 add (two
// roundings), the Q4_1 dequantization rule (kernels/int4_layout.h).
at::Tensor l4q_dequantize(const L4qCodes& c, const L4qQuantizer& q);

// The codes and (d, m) as INT4 blocks (quant/int4.h: fp16 d, fp16 m, codes j and j + g/2 in the
// low and high nibble of byte j), on the codes' device; `dtype` is the Int4Tensor's dtype (what
// dequantize_int4 returns by default). For g = 32 these are GGUF Q4_1 blocks. Needs g in
// {32, 64, 128}; 3-bit codes (0..7) are stored in the 4-bit blocks unchanged, so export is
// lossless for both bit widths.
quant::Int4Tensor l4q_to_int4(const L4qCodes& c, const L4qQuantizer& q,
                              at::ScalarType dtype = at::kFloat);

// y = x Wq^T for x [..., in] in the compute dtype (fp32, bf16 or fp16) -> [..., out] in x's
// dtype; Wq is built in fp32 (as above, with W0 = base.materialize(fp32)) and cast to x's dtype
// for the matmul. A, B, scale, offset: fp32, on x's device, typically leaves with
// requires_grad (the trainer's parameters); x may or may not require grad. The frozen base
// gets no gradient and is referenced, not copied: it must outlive the autograd graph (it is
// owned by the model). `chunk_elements` bounds the chunk of output rows (tests use small
// values to exercise several chunks).
//
// Transient memory: one [out, in] buffer in x's dtype for Wq (reused across calls and layers,
// per thread, device and dtype, as frozen_linear's scratch), and for an NF4 base one fp32
// [out, in] scratch for W0 (its blocks run across rows); dense and INT4 bases are read
// chunk by chunk.
at::Tensor l4q_linear(const at::Tensor& x, const FrozenWeight& base, const at::Tensor& A,
                      const at::Tensor& B, const at::Tensor& scale, const at::Tensor& offset,
                      double scaling, const L4qQuantizer& q,
                      int64_t chunk_elements = kL4qChunkElements);

}  // namespace qlt::adapters
