// The frozen base weight of a linear layer: dense (fp32/bf16) or NF4. The one place where a
// frozen weight is multiplied (DESIGN.md §2, adapters/); adapters are added on top of it by
// adapted_linear in adapters/lora.h (AdaptedLinear = FrozenWeight + Adapter).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "quant/nf4.h"

namespace qlt::adapters {

struct FrozenWeight {
  at::Tensor dense;                     // [out, in] in the compute dtype, when not quantized
  std::optional<quant::Nf4Tensor> nf4;  // when quantized (logical shape [out, in])

  bool quantized() const { return nf4.has_value(); }
  int64_t out_features() const;
  int64_t in_features() const;
  int64_t storage_bytes() const;
  // The weight as a dense [out, in] tensor in `dtype` (a new tensor for NF4).
  at::Tensor materialize(at::ScalarType dtype) const;
};

// y = x W^T for x [..., in] in the compute dtype -> [..., out].
// NF4: the weight is dequantized into a buffer reused across calls and layers, multiplied,
// and not kept; backward dequantizes again and returns the gradient for x only (the frozen
// weight gets none). No full-precision copy of W outlives the call.
at::Tensor frozen_linear(const at::Tensor& x, const FrozenWeight& weight);

}  // namespace qlt::adapters
