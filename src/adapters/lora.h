// LoRA adapters as PEFT 0.21 defines them (peft/tuners/lora/layer.py, LoraLayer + Linear):
//   y = base(x) + B(A(dropout(x))) * scaling,  A [r, in], B [out, r],
//   scaling = alpha / r, or alpha / sqrt(r) with rsLoRA.
// This file holds what LoRA-style adapters share (PEFT's init, its dropout); the adapter kinds
// and adapted_linear are in adapters/adapter.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <utility>

namespace qlt::adapters {

// The bound of torch.nn.init.kaiming_uniform_(w, a) for a weight with `fan_in` inputs,
// computed with the same double operations: gain = sqrt(2 / (1 + a^2)),
// bound = sqrt(3) * gain / sqrt(fan_in). For a = sqrt(5) this is ~1/sqrt(fan_in).
double kaiming_uniform_bound(int64_t fan_in, double a);

// PEFT's default init (init_lora_weights=True) of a low-rank pair: A [rank, a_in] ~ U(-bound,
// bound) with kaiming_uniform_(a=sqrt(5)) (fan-in a_in) drawn from `generator` (a CPU generator
// gives the same values as torch.nn.init with a torch.Generator in the same state), B [b_out,
// rank] = 0. Both fp32 leaves with requires_grad on `device`; A is drawn on the CPU and then
// moved, so the values do not depend on the device.
std::pair<at::Tensor, at::Tensor> init_low_rank_pair(int64_t a_in, int64_t b_out, int64_t rank,
                                                     at::Generator& generator, at::Device device);

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

}  // namespace qlt::adapters
