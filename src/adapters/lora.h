// LoRA adapters as PEFT 0.21 defines them (peft/tuners/lora/layer.py, LoraLayer + Linear):
//   y = base(x) + B(A(dropout(x))) * scaling,  A [r, in], B [out, r],
//   scaling = alpha / r, or alpha / sqrt(r) with rsLoRA.
// adapted_linear() is the ONE place where a frozen weight meets its adapter
// (DESIGN.md §2: AdaptedLinear = FrozenWeight + Adapter).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "adapters/frozen_weight.h"

namespace qlt::adapters {

struct LoraOptions {
  int64_t rank = 8;         // r
  double alpha = 16;        // lora_alpha
  double dropout = 0.0;     // lora_dropout, applied to the adapter's input in training only
  bool use_rslora = false;  // scaling alpha / sqrt(r) instead of alpha / r
  std::vector<std::string> target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};
};

struct LoraWeights {
  at::Tensor A;  // [r, in] fp32 leaf, requires_grad (PEFT lora_A.weight)
  at::Tensor B;  // [out, r] fp32 leaf, requires_grad (PEFT lora_B.weight)
  double scaling = 1.0;
};

// Checks rank >= 1, finite alpha, 0 <= dropout < 1 and a non-empty target list. UserError
// naming the option and the accepted range.
void check_lora_options(const LoraOptions& options);

// alpha / r, or alpha / sqrt(r) with use_rslora (PEFT LoraLayer.update_layer).
double lora_scaling(const LoraOptions& options);

// The bound of torch.nn.init.kaiming_uniform_(w, a) for a weight with `fan_in` inputs,
// computed with the same double operations: gain = sqrt(2 / (1 + a^2)),
// bound = sqrt(3) * gain / sqrt(fan_in). For a = sqrt(5) this is ~1/sqrt(fan_in).
double kaiming_uniform_bound(int64_t fan_in, double a);

// PEFT's default init (init_lora_weights=True): A ~ U(-bound, bound) with
// kaiming_uniform_(a=sqrt(5)) drawn from `generator` (a CPU generator gives the same values
// as torch.nn.init with a torch.Generator in the same state), B = 0. Both fp32 leaves with
// requires_grad on `device`; A is drawn on the CPU and then moved, so the values do not
// depend on the device.
LoraWeights init_lora_weights(int64_t in_features, int64_t out_features, const LoraOptions& options,
                              at::Generator& generator, at::Device device = at::kCPU);

// How the adapter input is dropped out in one forward call.
struct LoraDropout {
  double p = 0.0;
  bool training = false;  // eval / inference: identity
  // Required when training with p > 0; must be on x's device type. Each call advances it.
  std::optional<at::Generator> generator;
};

// nn.Dropout semantics with an explicit generator: in training, x * mask / (1 - p) with
// mask ~ Bernoulli(1 - p) (the formula of ATen's CPU dropout); identity otherwise or when
// p == 0 (PEFT uses nn.Identity then).
at::Tensor lora_dropout(const at::Tensor& x, const LoraDropout& dropout);

// y = frozen_linear(x, base) + B(A(dropout(x_fp32))) * scaling, x [..., in] in the compute
// dtype -> [..., out] in the compute dtype. Without an adapter, exactly frozen_linear.
// Dtypes follow PEFT: x is cast to the adapter dtype (fp32) first (_cast_input_dtype), and
//  - dense base (lora.Linear.forward): base result + fp32 delta is added in the promoted
//    dtype (fp32), then cast back to the base result's dtype;
//  - NF4 base (lora.bnb.Linear4bit.forward): the delta is cast to the base result's dtype
//    first and added in that dtype.
// In fp32 compute both are the same.
at::Tensor adapted_linear(const at::Tensor& x, const FrozenWeight& base,
                          const std::optional<LoraWeights>& lora, const LoraDropout& dropout);

}  // namespace qlt::adapters
