// AdamW with fp32 state and decoupled weight decay, bit-identical to torch.optim.AdamW (torch
// 2.11, CPU default = the single-tensor path `_single_tensor_adam` in torch/optim/adam.py,
// amsgrad off, maximize off). Per parameter p with gradient g, at its own step count t:
//   p *= 1 - lr*wd                      (skipped when wd == 0, as torch does)
//   m.lerp_(g, 1 - b1)                  (m = b1*m + (1-b1)*g, rounded the way lerp rounds)
//   v = v*b2; v += (1-b2)*g*g           (mul_ then addcmul_)
//   denom = sqrt(v) / (1 - b2^t)^0.5 + eps
//   p += -(lr / (1 - b1^t)) * m / denom (addcdiv_)
// The scalar factors are computed in double exactly as Python computes them (pow, not sqrt,
// for the ^0.5), and the tensor ops are the same ATen ops with the same scalars.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace qlt::optim {

struct AdamWOptions {
  double lr = 2e-4;  // base learning rate (the schedule scales it; step() takes the result)
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// Throws UserError naming the option ("optimizer.<key>") when a value is out of the range
// torch.optim.AdamW accepts: lr, eps, weight_decay >= 0 and finite; 0 <= beta < 1.
void validate(const AdamWOptions& options);

struct AdamWParam {
  std::string name;
  at::Tensor param;       // leaf, fp32, requires_grad; updated in place
  at::Tensor exp_avg;     // same shape, fp32: first moment m
  at::Tensor exp_avg_sq;  // same shape, fp32: second moment v
  int64_t step = 0;       // optimizer steps this parameter took (had a gradient)
  bool decay = true;      // weight decay applies (torch: a param group with weight_decay 0)
};

struct AdamW {
  // `params`: named leaf fp32 tensors with requires_grad, names unique. State starts at zero
  // (torch creates the same zeros lazily at a parameter's first step).
  // Parameters named in `no_weight_decay` get none (as a torch param group with weight_decay
  // 0; e.g. the L4Q quantizer's scales, which decay would shrink).
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
        const std::set<std::string>& no_weight_decay = {});

  // One update with learning rate `lr` (this step's value from the schedule). Parameters
  // whose grad is undefined are skipped entirely, like torch (no decay, no step count).
  void step(double lr);
  // Sets every grad to undefined (torch's zero_grad(set_to_none=True)).
  void zero_grad();
  int64_t steps_taken() const { return steps_taken_; }
  const AdamWOptions& options() const { return options_; }
  const std::vector<AdamWParam>& params() const { return params_; }

  // Checkpointing. state_tensors(): "<param>.exp_avg" and "<param>.exp_avg_sq" for every
  // parameter, in parameter order; the tensors alias the live state (save them before the
  // next step). state_meta(): {"steps_taken", "param_steps": {name: n}, "options": {...}}.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  nlohmann::json state_meta() const;
  // Restores what the two above wrote. Everything is validated before anything changes; a
  // missing, unexpected, wrongly shaped or typed tensor, or malformed meta, is a UserError
  // naming it (the checkpoint belongs to a different adapter setup). The hyperparameters in
  // meta are informational: the options this optimizer was built with stay in force.
  void load_state(const std::map<std::string, at::Tensor>& tensors, const nlohmann::json& meta);
  // Replaces every state tensor t by to(t), which must return a tensor of t's shape, dtype and
  // values (the paged optimizer types move the state into CUDA managed memory this way).
  void relocate_state(const std::function<at::Tensor(const at::Tensor&)>& to);

 private:
  std::vector<AdamWParam> params_;
  AdamWOptions options_;
  int64_t steps_taken_ = 0;
};

}  // namespace qlt::optim
