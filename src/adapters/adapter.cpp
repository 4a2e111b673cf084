#include "adapters/adapter.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>

#include "adapters/balanced_lora.h"
#include "core/errors.h"

namespace qlt::adapters {
namespace {

struct KindRow {
  const char* name;
  AdapterKind kind;
};

// THE table of adapter kinds (adapter.type).
constexpr KindRow kKinds[] = {
    {"none", AdapterKind::kNone},   {"lora", AdapterKind::kLora},
    {"blora", AdapterKind::kBlora}, {"qa-blora", AdapterKind::kQaBlora},
    {"l4q", AdapterKind::kL4q},
};

AdapterKind kind_of(const std::string& name) {
  for (const auto& row : kKinds)
    if (name == row.name) return row.kind;
  user_error("adapter.type \"{}\" is unknown; use one of {}", name,
             fmt::join(adapter_type_names(), ", "));
}

// The PEFT LoRA dtype rule: a dense base adds in the promoted dtype (fp32) and casts back
// (lora.Linear); a quantized base casts the delta first (bnb Linear4bit).
at::Tensor add_delta(const at::Tensor& result, const at::Tensor& delta, const FrozenWeight& base) {
  if (base.quantized()) return result + delta.to(result.scalar_type());
  return (result + delta).to(result.scalar_type());
}

const L4qAdapter& as_l4q(const Adapter& a) { return std::get<L4qAdapter>(a); }

}  // namespace

std::vector<std::string> adapter_type_names() {
  std::vector<std::string> names;
  for (const auto& row : kKinds) names.emplace_back(row.name);
  return names;
}

const char* adapter_type_name(AdapterKind kind) {
  for (const auto& row : kKinds)
    if (row.kind == kind) return row.name;
  return "?";
}

AdapterOptions adapter_options(const AdapterConfig& config, const quant::WeightFormat& format) {
  AdapterOptions o;
  o.config = config;
  o.kind = kind_of(config.type);
  if (o.none()) return o;
  if (config.rank < 1)
    user_error("adapter.rank must be >= 1, got {}; use e.g. 8 or 64", config.rank);
  if (!std::isfinite(config.alpha))
    user_error("adapter.alpha must be a finite number, got {}", config.alpha);
  if (!(config.dropout >= 0.0 && config.dropout < 1.0))
    user_error("adapter.dropout must be in [0, 1), got {}; use 0 to disable it", config.dropout);
  if (config.target_modules.empty())
    user_error("adapter.target_modules is empty; name at least one linear layer (e.g. q_proj)");
  if (config.balance < 1) user_error("adapter.balance must be >= 1, got {}", config.balance);
  const double r = static_cast<double>(config.rank);
  o.scaling = config.use_rslora ? config.alpha / std::sqrt(r) : config.alpha / r;
  o.inner_rank = config.rank;
  switch (o.kind) {
    case AdapterKind::kNone:
    case AdapterKind::kLora:
      break;
    case AdapterKind::kBlora:
      o.pool = o.repeat = config.balance;
      o.inner_rank = config.balance * config.rank;
      break;
    case AdapterKind::kQaBlora: {
      const auto* int4 = std::get_if<quant::Int4Options>(&format);
      if (int4 == nullptr) {
        user_error(
            "adapter.type \"qa-blora\" needs quantization.type \"int4\" (it merges into the INT4 "
            "group offsets), but the frozen weights are {}; set quantization.type to int4, or "
            "use adapter.type blora on this base",
            quant::describe(format));
      }
      o.pool = int4->group_size;  // the update is constant inside a quantization group
      o.repeat = config.balance;
      break;
    }
    case AdapterKind::kL4q:
      if (config.l4q_bits != 3 && config.l4q_bits != 4)
        user_error("adapter.l4q_bits must be 3 or 4, got {}", config.l4q_bits);
      if (config.l4q_group_size != 32 && config.l4q_group_size != 64 &&
          config.l4q_group_size != 128) {
        user_error(
            "adapter.l4q_group_size must be 32 (= GGUF Q4_1), 64 or 128 (the INT4 group sizes "
            "its merged model is stored in), got {}",
            config.l4q_group_size);
      }
      o.l4q = L4qQuantizer{config.l4q_bits, config.l4q_group_size};
      break;
  }
  return o;
}

void check_adapter_shape(const AdapterOptions& o, int64_t in, int64_t out,
                         const std::string& module) {
  if (o.none()) return;
  if (o.kind == AdapterKind::kBlora && (in % o.pool != 0 || out % o.repeat != 0)) {
    user_error(
        "adapter.balance {} does not divide the {} dimension {} of {}; Q-BLoRA averages its "
        "input over λ features and repeats its output λ times: choose a λ that divides both "
        "dimensions of every targeted layer (2 does for LLaMA models)",
        o.config.balance, in % o.pool != 0 ? "input" : "output", in % o.pool != 0 ? in : out,
        module);
  }
  if (o.kind == AdapterKind::kQaBlora) {
    if (in % o.pool != 0) {
      user_error(
          "quantization.group_size {} (the QA-BLoRA pooling window) does not divide the input "
          "dimension {} of {}",
          o.pool, in, module);
    }
    if (out % o.repeat != 0) {
      user_error(
          "adapter.balance {} (QA-BLoRA output repeat) does not divide the output dimension {} "
          "of {}; choose a divisor of it",
          o.repeat, out, module);
    }
  }
  if (o.kind == AdapterKind::kL4q && in % o.l4q.group_size != 0) {
    user_error("adapter.l4q_group_size {} does not divide the input dimension {} of {}",
               o.l4q.group_size, in, module);
  }
}

std::vector<AdapterTensorSpec> adapter_tensor_specs(const AdapterOptions& o, int64_t in,
                                                    int64_t out) {
  TORCH_CHECK(!o.none(), "adapter_tensor_specs: adapter.type none has no tensors");
  std::vector<AdapterTensorSpec> specs = {
      {"lora_A.weight", {o.inner_rank, in / o.pool}, true},
      {"lora_B.weight", {out / o.repeat, o.inner_rank}, true},
  };
  if (o.kind == AdapterKind::kL4q) {
    const int64_t groups = in / o.l4q.group_size;
    specs.push_back({"l4q_scale", {out, groups}, false});
    specs.push_back({"l4q_offset", {out, groups}, false});
  }
  return specs;
}

Adapter init_adapter(const AdapterOptions& o, const FrozenWeight& base, at::Generator& generator,
                     at::Device device) {
  const int64_t in = base.in_features(), out = base.out_features();
  auto [a, b] = init_low_rank_pair(in / o.pool, out / o.repeat, o.inner_rank, generator, device);
  if (o.kind != AdapterKind::kL4q) return LowRankAdapter{a, b};
  // B = 0, so W' = W0: the quantizer starts at min-max of the base weight's groups.
  L4qAdapter l4q{a, b, {}, {}, o.config.l4q_warmup_steps == 0};
  at::NoGradGuard no_grad;
  auto init = l4q_init_scale_offset(base.materialize(at::kFloat), o.l4q);
  l4q.scale = init.scale.to(device).requires_grad_(true);
  l4q.offset = init.offset.to(device).requires_grad_(true);
  return l4q;
}

void start_l4q_quantization(Adapter& adapter, const FrozenWeight& base,
                            const AdapterOptions& options) {
  auto& a = std::get<L4qAdapter>(adapter);
  at::NoGradGuard no_grad;
  // W' = W0 + s B A [out, in] fp32, as trained so far.
  const at::Tensor w = base.materialize(at::kFloat) + at::matmul(a.B, a.A) * options.scaling;
  auto init = l4q_init_scale_offset(w, options.l4q);
  a.scale.copy_(init.scale);
  a.offset.copy_(init.offset);
  a.quantizing = true;
}

Adapter adapter_from_tensors(const AdapterOptions& o, const std::vector<at::Tensor>& tensors,
                             bool l4q_quantizing, at::Device device) {
  auto leaf = [&](const at::Tensor& t) {
    return t.detach()
        .to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true)
        .requires_grad_(true);
  };
  if (o.kind != AdapterKind::kL4q) {
    TORCH_CHECK(tensors.size() == 2, "adapter_from_tensors: expected 2 tensors");
    return LowRankAdapter{leaf(tensors[0]), leaf(tensors[1])};
  }
  TORCH_CHECK(tensors.size() == 4, "adapter_from_tensors: expected 4 tensors");
  return L4qAdapter{leaf(tensors[0]), leaf(tensors[1]), leaf(tensors[2]), leaf(tensors[3]),
                    l4q_quantizing};
}

std::vector<at::Tensor> adapter_tensors(const Adapter& adapter) {
  if (const auto* lr = std::get_if<LowRankAdapter>(&adapter)) return {lr->A, lr->B};
  const auto& q = as_l4q(adapter);
  return {q.A, q.B, q.scale, q.offset};
}

at::Tensor adapted_linear(const at::Tensor& x, const FrozenWeight& base, const Adapter* adapter,
                          const AdapterOptions& o, const LoraDropout& dropout) {
  if (adapter == nullptr) return frozen_linear(x, base);
  if (const auto* q = std::get_if<L4qAdapter>(adapter)) {
    if (q->quantizing) {
      return l4q_linear(x, base, q->A, q->B, q->scale, q->offset, o.scaling, o.l4q);
    }
    // LoRA warm-up: W0 + s B A without the quantizer (and without dropout: L4Q's adapter lives in
    // weight space).
    auto result = frozen_linear(x, base);
    return add_delta(result, at::linear(at::linear(x.to(at::kFloat), q->A), q->B) * o.scaling,
                     base);
  }
  const auto& lr = std::get<LowRankAdapter>(*adapter);
  auto result = frozen_linear(x, base);       // [..., out] compute dtype
  auto x_adapter = x.to(lr.A.scalar_type());  // PEFT's _cast_input_dtype: [..., in] fp32
  // s * repeat(B A pool(dropout(x))): [..., in] -> [..., out] fp32
  const at::Tensor delta =
      pooled_lora_delta(lora_dropout(x_adapter, dropout), lr.A, lr.B, o.pool, o.repeat, o.scaling);
  return add_delta(result, delta, base);
}

std::pair<at::Tensor, at::Tensor> peft_lora_of(const Adapter& adapter, const AdapterOptions& o) {
  if (const auto* q = std::get_if<L4qAdapter>(&adapter)) return {q->A, q->B};
  const auto& lr = std::get<LowRankAdapter>(adapter);
  if (o.pool == 1 && o.repeat == 1) return {lr.A, lr.B};
  at::NoGradGuard no_grad;
  auto expanded = expand_pooled_lora(lr.A, lr.B, o.pool, o.repeat);
  return {expanded.A, expanded.B};
}

int64_t peft_rank(const AdapterOptions& o) { return o.inner_rank; }

double peft_alpha(const AdapterOptions& o) {
  if (o.kind == AdapterKind::kLora || o.kind == AdapterKind::kL4q) return o.config.alpha;
  // PEFT computes lora_alpha / r' (or / sqrt(r')) with r' = inner_rank; the native scaling is
  // alpha / r with r = adapter.rank.
  const double r = static_cast<double>(peft_rank(o));
  return o.config.use_rslora ? o.scaling * std::sqrt(r) : o.scaling * r;
}

at::Tensor effective_weight(const FrozenWeight& base, const Adapter* adapter,
                            const AdapterOptions& o) {
  at::NoGradGuard no_grad;
  const at::Tensor w0 = base.materialize(at::kFloat);  // [out, in] fp32
  if (adapter == nullptr) return w0;
  if (const auto* q = std::get_if<L4qAdapter>(adapter)) {
    const at::Tensor w_prime = w0 + at::matmul(q->B, q->A) * o.scaling;
    if (!q->quantizing) return w_prime;
    return l4q_dequantize(l4q_codes(w_prime, q->scale, q->offset, o.l4q), o.l4q);
  }
  auto [a, b] = peft_lora_of(*adapter, o);
  return w0 + at::matmul(b, a) * o.scaling;
}

MergedWeight merge_adapter(const FrozenWeight& base, const Adapter& adapter,
                           const AdapterOptions& o, const quant::WeightFormat& target,
                           at::ScalarType dense_dtype) {
  at::NoGradGuard no_grad;
  const auto* int4_target = std::get_if<quant::Int4Options>(&target);
  MergedWeight out;
  if (const auto* q = std::get_if<L4qAdapter>(&adapter)) {
    const at::Tensor w_prime = base.materialize(at::kFloat) + at::matmul(q->B, q->A) * o.scaling;
    out.effective = w_prime;
    if (q->quantizing) {
      const L4qCodes codes = l4q_codes(w_prime, q->scale, q->offset, o.l4q);
      out.effective = l4q_dequantize(codes, o.l4q);
      if (int4_target != nullptr && o.l4q.group_size % int4_target->group_size == 0) {
        // Exact: the trained layer IS d * q + m with these codes (4-bit storage holds 3-bit);
        // a group of k target groups repeats its d and m in each (INT4 g32 = Q4_1 from g64).
        const int64_t k = o.l4q.group_size / int4_target->group_size;
        L4qQuantizer split = o.l4q;
        split.group_size = int4_target->group_size;
        const L4qCodes blocks = k == 1 ? codes
                                       : L4qCodes{codes.codes, codes.d.repeat_interleave(k, 1),
                                                  codes.m.repeat_interleave(k, 1)};
        out.weight = l4q_to_int4(blocks, split, dense_dtype);
        out.exact = true;
        return out;
      }
    }
  } else {
    const auto& lr = std::get<LowRankAdapter>(adapter);
    out.effective = effective_weight(base, &adapter, o);  // W0 + s B' A', fp32 [out, in]
    const auto* int4_base = std::get_if<quant::Int4Tensor>(&base.stored);
    if (o.kind == AdapterKind::kQaBlora && int4_target != nullptr && int4_base != nullptr &&
        int4_target->group_size == o.pool && int4_base->group_size == o.pool) {
      // Exact: the update is constant inside each group, folded into m (rounded to fp16).
      const at::Tensor window = pooled_lora_window_delta(lr.A, lr.B, o.pool, o.repeat, o.scaling);
      out.weight = merge_into_int4_offsets(*int4_base, window.to(int4_base->device()));
      out.exact = true;
      return out;
    }
  }
  // Stored in the target format (re-quantized when it is quantized).
  out.weight = quant::store_weight(out.effective, target, dense_dtype, "merged weight");
  return out;
}

}  // namespace qlt::adapters
