// The CUDA path of the 8-bit AdamW (optimizer.type adamw_8bit on a GPU): at::Tensor in,
// kernels/adamw_8bit.cu (raw pointers + stream) out. Compiled in every build; only QLT_CUDA
// builds (QLT_WITH_CUDA) have a body, the CPU build's versions (in adamw_8bit.cpp) are internal
// errors: a CPU build cannot hold a CUDA tensor, so AdamW8bit never calls them there.
#pragma once

#include <ATen/ATen.h>

#include "optim/blockwise_8bit.h"

namespace qlt::optim {

// The scalars of one 8-bit Adam update of one parameter, in double, exactly the values the CPU
// reference passes to its ATen ops (adamw_8bit_scalars computes them for both paths; the
// kernel rounds each to fp32 once, as ATen does with a double Scalar on an fp32 tensor).
struct AdamW8bitStepScalars {
  double beta1 = 0.0;
  double one_minus_beta1 = 0.0;  // 1 - beta1
  double beta2 = 0.0;
  double one_minus_beta2 = 0.0;  // 1 - beta2
  double correction2 = 1.0;      // sqrt(1 - beta2^step)
  double eps = 0.0;
  bool decay_applies = false;  // weight decay > 0: p *= decay before the update
  double decay = 1.0;          // 1 - lr * weight_decay
  double step_size = 0.0;      // -lr / (1 - beta1^step)
};

// Device copies of the two dynamic maps and their quantization tables for one CUDA device,
// made once per optimizer and device (not per step).
struct AdamW8bitDeviceTables {
  at::Device device = at::kCPU;
  at::Tensor signed_map;    // [256] fp32 (first moment)
  at::Tensor signed_lut;    // [65536] uint8 (QuantLut::index)
  at::Tensor unsigned_map;  // [256] fp32 (second moment)
  at::Tensor unsigned_lut;  // [65536] uint8
};
AdamW8bitDeviceTables adamw_8bit_device_tables(const QuantLut& signed_lut,
                                               const QuantLut& unsigned_lut, at::Device device);

// One update of one parameter on its CUDA device, on the current stream, in place:
//   param            fp32, any shape (n elements; a non-contiguous one goes through a copy)
//   grad             fp32, param's shape, same device
//   state1, state2   uint8 codes of m and v, contiguous, n elements
//   absmax1, absmax2 [ceil(n/256)] fp32, contiguous
// All on param's device (CUDA managed memory of that device included), tables for it too.
void adamw_8bit_update_cuda(const at::Tensor& param, const at::Tensor& grad, at::Tensor& state1,
                            at::Tensor& state2, at::Tensor& absmax1, at::Tensor& absmax2,
                            const AdamW8bitStepScalars& scalars,
                            const AdamW8bitDeviceTables& tables);

}  // namespace qlt::optim
