// The frozen base weight of a linear layer, in any format of the weight-format table
// (quant/weight_format.h: dense, NF4, INT4 groups). The one place where a frozen weight is
// multiplied (DESIGN.md §2, adapters/); adapters are added on top of it by adapted_linear in
// adapters/lora.h (AdaptedLinear = FrozenWeight + Adapter).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "quant/weight_format.h"

namespace qlt::adapters {

struct FrozenWeight {
  quant::StoredWeight stored;  // logical shape [out, in]

  FrozenWeight() = default;
  FrozenWeight(quant::StoredWeight s) : stored(std::move(s)) {}  // NOLINT: implicit on purpose
  FrozenWeight(at::Tensor dense) : stored(std::move(dense)) {}   // NOLINT
  FrozenWeight(quant::Nf4Tensor q) : stored(std::move(q)) {}     // NOLINT
  FrozenWeight(quant::Int4Tensor q) : stored(std::move(q)) {}    // NOLINT

  bool quantized() const { return quant::is_quantized(stored); }
  int64_t out_features() const;
  int64_t in_features() const;
  int64_t storage_bytes() const { return quant::storage_bytes(stored); }
  // The dense [out, in] weight (the compute-dtype tensor itself); an internal error when the
  // weight is quantized.
  const at::Tensor& dense() const;
  // The weight as a dense [out, in] tensor in `dtype` (a new tensor for quantized formats).
  at::Tensor materialize(at::ScalarType dtype) const { return quant::dequantize(stored, dtype); }
};

// y = x W^T for x [..., in] in the compute dtype -> [..., out].
// Quantized formats: the weight is dequantized into a buffer reused across calls and layers,
// multiplied, and not kept; backward dequantizes again and returns the gradient for x only
// (the frozen weight gets none). No full-precision copy of W outlives the call.
at::Tensor frozen_linear(const at::Tensor& x, const FrozenWeight& weight);

}  // namespace qlt::adapters
