// AdamW with 8-bit blockwise state, bit-identical to bitsandbytes.optim.AdamW8bit (0.50.2) on its
// CPU backend (bitsandbytes/backends/cpu/ops.py; METHODS.md §7). On the CPU the ATen ops below
// are the reference; in QLT_CUDA builds an 8-bit parameter on a CUDA device is updated by the
// fused kernel (kernels/adamw_8bit.cu through adamw_8bit_cuda.h: same codes and absmax bit for
// bit, the parameter within one rounding per step), small ones by the same ATen ops on CUDA.
//
// Per parameter p with gradient g, at its own step count t (bnb's Optimizer2State.update_step):
//   numel(p) >= min_8bit_size (4096): state1 / state2 are uint8 codes of p's shape with fp32
//   absmax per block of 256 (blockwise_8bit.h; signed map for m, unsigned for v):
//     m = dequant(state1), v = dequant(state2)                       (fp32)
//     m = m*b1 + (1-b1)*g;  v = v*b2 + (1-b2)*g*g                     (mul_, add_ / addcmul_)
//     c1 = 1 - b1^t;  c2 = sqrt(1 - b2^t)
//     denom = sqrt(v) / c2 + eps
//     p *= 1 - lr*wd                                                  (only when wd > 0)
//     p += (-lr / c1) * m / denom                                     (addcdiv_)
//     state1, absmax1 = quant(m);  state2, absmax2 = quant(v)
//   smaller parameters keep fp32 m (state1) and v (state2), bnb's 32-bit CPU update:
//     m, v as above;  p *= 1 - lr*wd (wd > 0);  p += (-lr*c2/c1) * m / (sqrt(v) + eps*c2)
// The scalars are computed in double as Python computes them (** = pow, math.sqrt), the tensor
// ops are the ATen ops bnb calls with the same scalars, so the results are the same bits.
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

#include "optim/adamw.h"
#include "optim/adamw_8bit_cuda.h"
#include "optim/blockwise_8bit.h"

namespace qlt::optim {

inline constexpr int64_t kMin8bitSize = 4096;  // bnb's min_8bit_size default

struct AdamW8bitParam {
  std::string name;
  at::Tensor param;    // leaf, fp32, requires_grad, CPU or CUDA; updated in place
  bool quantized;      // numel >= min_8bit_size: 8-bit state
  at::Tensor state1;   // quantized: uint8 codes, param's shape (m); else fp32 m
  at::Tensor state2;   // quantized: uint8 codes, param's shape (v); else fp32 v
  at::Tensor absmax1;  // quantized: [ceil(numel/256)] fp32; else undefined
  at::Tensor absmax2;  // same, for state2
  int64_t step = 0;    // optimizer steps this parameter took (had a gradient)
  bool decay = true;   // weight decay applies (bnb: a param group with weight_decay 0)
};

// The scalars of one 8-bit update of a parameter at its step `step` (>= 1), in double as bnb's
// Python computes them: beta ** step = pow, math.sqrt. The CPU path passes them to ATen ops,
// the CUDA kernel rounds them to fp32 the same way, so both use the very same values.
AdamW8bitStepScalars adamw_8bit_scalars(const AdamWOptions& options, int64_t step, double lr,
                                        double weight_decay);

struct AdamW8bit {
  // As AdamW's constructor; parameters are CPU tensors, or CUDA tensors in a QLT_CUDA build
  // (the state lives with its parameter). `min_8bit_size`: parameters with fewer elements keep
  // fp32 state (bnb's min_8bit_size). State starts at zero codes and zero absmax (bnb's
  // init_state), i.e. m = v = 0.
  AdamW8bit(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
            const std::set<std::string>& no_weight_decay = {},
            int64_t min_8bit_size = kMin8bitSize);

  // One update with learning rate `lr`; parameters whose grad is undefined are skipped (no
  // decay, no step count), as bnb does.
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return steps_taken_; }
  const AdamWOptions& options() const { return options_; }
  const std::vector<AdamW8bitParam>& params() const { return params_; }

  // Checkpointing, as AdamW: state_tensors() are "<param>.state1", "<param>.state2" and, for
  // 8-bit parameters, "<param>.absmax1", "<param>.absmax2" (bnb's state keys), aliasing the
  // live state. state_meta(): {"steps_taken", "param_steps", "options"}. load_state validates
  // everything (names, shapes, dtypes: uint8 codes vs fp32 state) before changing anything; a
  // mismatch is a UserError naming the tensor.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  nlohmann::json state_meta() const;
  void load_state(const std::map<std::string, at::Tensor>& tensors, const nlohmann::json& meta);
  // Replaces every state tensor t by to(t), which must return a tensor of t's shape, dtype and
  // values (the paged optimizer types move the state into CUDA managed memory this way).
  void relocate_state(const std::function<at::Tensor(const at::Tensor&)>& to);

 private:
  void update_8bit(AdamW8bitParam& s, const at::Tensor& grad, double lr, double weight_decay);
  void update_32bit(AdamW8bitParam& s, const at::Tensor& grad, double lr, double weight_decay);
  const AdamW8bitDeviceTables& device_tables(at::Device device);

  std::vector<AdamW8bitParam> params_;
  AdamWOptions options_;
  int64_t min_8bit_size_;
  QuantLut signed_lut_;                               // first moment
  QuantLut unsigned_lut_;                             // second moment
  std::vector<AdamW8bitDeviceTables> device_tables_;  // per CUDA device with 8-bit parameters
  int64_t steps_taken_ = 0;
};

}  // namespace qlt::optim
