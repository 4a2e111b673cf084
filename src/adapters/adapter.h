// The ONE place where a frozen base weight meets its adapter (DESIGN.md §2):
//   AdaptedLinear = FrozenWeight (a row of the weight-format table) + Adapter (a variant).
//
// Adapter kinds (config adapter.type; one table, adapter_kinds() in adapter.cpp):
//   none      no adapter (the base model; `train` refuses it: nothing to train)
//   lora      LoRA / QLoRA (PEFT semantics, METHODS.md §4): y = base(x) + s * B A x
//   blora     Q-BLoRA (METHODS.md §5), balance λ: the adapter input is average-pooled by λ, its
//             output repeated λ times, rank λr at LoRA-r's parameter count
//   qa-blora  QA-BLoRA on an INT4 base: input pooled by the quantization group size g, output
//             repeated λ_out = adapter.balance, rank r; the update is constant inside every
//             quantization group, so it merges exactly into the group offsets m
//   l4q       L4Q (METHODS.md §6): the LoRA is added to the weight, W' = W0 + s B A, and W' is
//             fake-quantized group-wise with learned scale and offset (adapters/l4q.h)
// lora, blora and qa-blora share one representation (LowRankAdapter): A [R, in/pool],
// B [out/repeat, R], delta(x) = s * repeat(B A pool(x)); LoRA is pool = repeat = 1.
//
// The trainer, checkpoints, eval and export see adapters only through this header and the
// model's accessors (model/llama.h: adapter_parameters, peft_lora_tensors): named tensors.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "adapters/frozen_weight.h"
#include "adapters/l4q.h"
#include "adapters/lora.h"
#include "core/config.h"
#include "quant/weight_format.h"

namespace qlt::adapters {

enum class AdapterKind { kNone, kLora, kBlora, kQaBlora, kL4q };

// "none", "lora", "blora", "qa-blora", "l4q": the accepted values of adapter.type (the config
// table's one_of equals this list; tested).
std::vector<std::string> adapter_type_names();
const char* adapter_type_name(AdapterKind kind);

// The adapter section as the layers use it: the config section itself (its defaults are the
// only defaults) plus what follows from it and the frozen weight format. Built only by
// adapter_options(), which validates the section once.
struct AdapterOptions {
  AdapterConfig config;
  AdapterKind kind = AdapterKind::kNone;
  int64_t pool = 1;         // adapter input = mean of `pool` consecutive input features
  int64_t repeat = 1;       // each adapter output feature is repeated `repeat` times
  int64_t inner_rank = 0;   // rows of A: λr for blora, r otherwise
  double scaling = 0;       // alpha / r, or alpha / sqrt(r) with use_rslora (r = adapter.rank)
  L4qQuantizer l4q{4, 32};  // l4q: bits and group size

  bool none() const { return kind == AdapterKind::kNone; }
  // PEFT's module names this adapter targets (config.target_modules).
  const std::vector<std::string>& target_modules() const { return config.target_modules; }
};

// The one conversion of the adapter section. UserError naming the key and the fix for
// combinations that make no sense: qa-blora on a frozen format other than INT4 (its merge folds
// into INT4 group offsets), an l4q group size Q4_1-style storage cannot hold, ...
AdapterOptions adapter_options(const AdapterConfig& config, const quant::WeightFormat& format);

// Checks what needs the layer's shape: the pooling window divides `in`, the repeat divides `out`,
// the L4Q group divides `in`. UserError naming the key, the module and the dimension.
void check_adapter_shape(const AdapterOptions& options, int64_t in, int64_t out,
                         const std::string& module);

// lora, blora, qa-blora: A [inner_rank, in/pool], B [out/repeat, inner_rank], fp32 leaves.
struct LowRankAdapter {
  at::Tensor A;
  at::Tensor B;
};

// l4q: the LoRA A [r, in], B [out, r] and the quantizer's scale / offset [out, in/g], all fp32
// leaves. `quantizing` is false during the LoRA warm-up (adapter.l4q_warmup_steps), when the
// layer is W0 + s B A unquantized.
struct L4qAdapter {
  at::Tensor A;
  at::Tensor B;
  at::Tensor scale;
  at::Tensor offset;
  bool quantizing = true;
};

using Adapter = std::variant<LowRankAdapter, L4qAdapter>;

// A tensor an adapter holds: its name relative to the module ("lora_A.weight", "lora_B.weight",
// "l4q_scale", "l4q_offset"; PEFT's names where PEFT has one) and shape.
struct AdapterTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool weight_decay;  // false for the L4Q quantizer's scale and offset
};
std::vector<AdapterTensorSpec> adapter_tensor_specs(const AdapterOptions& options, int64_t in,
                                                    int64_t out);

// A fresh adapter for a linear [out, in] on `device`: A ~ kaiming-uniform(a = sqrt(5)) drawn
// from `generator` on the CPU (PEFT's init; fan-in = A's columns), B = 0; l4q also initializes
// scale / offset from min-max of each group of W0 (`base`) and starts quantizing unless a
// warm-up is configured.
Adapter init_adapter(const AdapterOptions& options, const FrozenWeight& base,
                     at::Generator& generator, at::Device device);

// L4Q after its LoRA warm-up: initializes scale / offset in place (the optimizer keeps its
// references) from min-max of W' = W0 + s B A as trained so far, and starts quantizing.
void start_l4q_quantization(Adapter& adapter, const FrozenWeight& base,
                            const AdapterOptions& options);

// An adapter from tensors named as adapter_tensor_specs says (shapes already checked), copied
// to fp32 leaves with requires_grad on `device`.
Adapter adapter_from_tensors(const AdapterOptions& options,
                             const std::vector<at::Tensor>& tensors_in_spec_order,
                             bool l4q_quantizing, at::Device device);

// The adapter's tensors in adapter_tensor_specs order (the live leaves, not copies).
std::vector<at::Tensor> adapter_tensors(const Adapter& adapter);

// y = frozen_linear(x, base) + adapter, x [..., in] in the compute dtype -> [..., out] in the
// compute dtype. Without an adapter, exactly frozen_linear. Low-rank dtypes follow PEFT: x is
// cast to fp32 first; a dense base adds in fp32 then casts back (lora.Linear), a quantized base
// casts the delta first (bnb Linear4bit). L4Q replaces the base product by x Wq^T.
at::Tensor adapted_linear(const at::Tensor& x, const FrozenWeight& base, const Adapter* adapter,
                          const AdapterOptions& options, const LoraDropout& dropout);

// The update as a standard rank-R LoRA (A' [R, in], B' [out, R]) with PEFT scaling: what
// PEFT's adapter_model.safetensors holds. For l4q: its A and B (the quantizer is not a LoRA).
std::pair<at::Tensor, at::Tensor> peft_lora_of(const Adapter& adapter,
                                               const AdapterOptions& options);

// PEFT's r and lora_alpha for that LoRA: r = inner_rank; lora_alpha such that PEFT's scaling
// (lora_alpha / r, or / sqrt(r) with use_rslora) equals options.scaling up to one rounding.
int64_t peft_rank(const AdapterOptions& options);
double peft_alpha(const AdapterOptions& options);

// The layer's effective weight [out, in] fp32 as the forward uses it: dequantize(base) + ΔW for
// low-rank kinds (ΔW = s B' A'), L4Q's fake-quantized Wq (or W0 + s B A in its warm-up), the
// base alone without an adapter. What a merge should reproduce.
at::Tensor effective_weight(const FrozenWeight& base, const Adapter* adapter,
                            const AdapterOptions& options);

// The trained layer as a stored weight in `target` (merge): qa-blora into INT4 of the same
// group size folds into the offsets and l4q into INT4 of its group size writes its codes, both
// exactly; otherwise W = dequantize(base) + ΔW in fp32, then stored in `target` (re-quantized
// when target is quantized; dense targets use `dense_dtype`). exact is set when no rounding
// beyond the format's own storage of m happened.
struct MergedWeight {
  quant::StoredWeight weight;
  bool exact = false;
  at::Tensor effective;  // effective_weight of the layer before the merge, [out, in] fp32
};
MergedWeight merge_adapter(const FrozenWeight& base, const Adapter& adapter,
                           const AdapterOptions& options, const quant::WeightFormat& target,
                           at::ScalarType dense_dtype);

}  // namespace qlt::adapters
