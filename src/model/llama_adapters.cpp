// The adapters of a LlamaModel (model/llama.h): attaching fresh or saved ones, the one accessor
// of trainable tensors, their PEFT form, and merging them into the frozen weights.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/errors.h"
#include "model/llama.h"

namespace qlt::model {
namespace {

// Which linears the options target (indexed as llama_linear_names()); UserError for a name
// that is not one of them.
std::array<bool, kNumLlamaLinears> targeted_linears(const adapters::AdapterOptions& options) {
  const auto& names = llama_linear_names();
  std::array<bool, kNumLlamaLinears> targeted{};
  for (const auto& module : options.target_modules()) {
    auto it = std::find(names.begin(), names.end(), module);
    if (it == names.end()) {
      user_error(
          "unknown adapter target module '{}' (adapter.target_modules); a LLaMA model has these "
          "linear layers: {}",
          module, fmt::join(names, ", "));
    }
    targeted[it - names.begin()] = true;
  }
  return targeted;
}

// Calls f(layer, linear, frozen weight) for every targeted linear, after checking every shape.
template <typename F>
void for_each_target(const LlamaModel& model, const adapters::AdapterOptions& options, F&& f) {
  const auto targeted = targeted_linears(options);
  const auto layers = static_cast<int64_t>(model.weights.layers.size());
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < layers; ++i) {
      for (int j = 0; j < kNumLlamaLinears; ++j) {
        if (!targeted[j]) continue;
        const auto& w = linear_weight(model.weights.layers[i], j);
        if (pass == 0) {
          adapters::check_adapter_shape(options, w.in_features(), w.out_features(),
                                        fmt::format("layer {} {}", i, llama_linear_names()[j]));
        } else {
          f(i, j, w);
        }
      }
    }
  }
}

}  // namespace

void attach_adapters(LlamaModel& model, const adapters::AdapterOptions& options,
                     at::Generator& generator) {
  if (options.none()) {
    model.adapters.clear();
    model.adapter_options.reset();
    return;
  }
  std::vector<LayerAdapters> attached(model.weights.layers.size());
  for_each_target(model, options, [&](int64_t i, int j, const adapters::FrozenWeight& w) {
    attached[i][j] = adapters::init_adapter(options, w, generator, model.device());
  });
  model.adapters = std::move(attached);
  model.adapter_options = options;
}

std::vector<ExpectedTensor> expected_adapter_tensors(const LlamaModel& model,
                                                     const adapters::AdapterOptions& options) {
  std::vector<ExpectedTensor> expected;
  if (options.none()) return expected;
  for_each_target(model, options, [&](int64_t i, int j, const adapters::FrozenWeight& w) {
    const auto key = peft_module_key(i, j);
    for (auto& spec : adapters::adapter_tensor_specs(options, w.in_features(), w.out_features()))
      expected.push_back({key + "." + spec.name, spec.shape});
  });
  return expected;
}

void attach_adapters(LlamaModel& model, const adapters::AdapterOptions& options,
                     const std::map<std::string, at::Tensor>& tensors, const std::string& source,
                     bool l4q_quantizing) {
  const auto expected = expected_adapter_tensors(model, options);
  std::vector<std::string> problems;
  std::set<std::string> expected_names;
  for (const auto& e : expected) {
    expected_names.insert(e.name);
    auto it = tensors.find(e.name);
    if (it == tensors.end()) {
      problems.push_back(
          fmt::format("missing {} (expected shape [{}])", e.name, fmt::join(e.shape, ", ")));
    } else if (it->second.sizes() != at::IntArrayRef(e.shape)) {
      problems.push_back(fmt::format("{} has shape [{}], expected [{}]", e.name,
                                     fmt::join(it->second.sizes(), ", "),
                                     fmt::join(e.shape, ", ")));
    } else if (!at::isFloatingType(it->second.scalar_type())) {
      problems.push_back(fmt::format("{} has dtype {}, expected a float type", e.name,
                                     std::string(c10::toString(it->second.scalar_type()))));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!expected_names.count(name)) {
      problems.push_back(
          fmt::format("unexpected {} (shape [{}])", name, fmt::join(tensor.sizes(), ", ")));
    }
  }
  if (!problems.empty()) {
    user_error(
        "{}: adapter tensors do not match the model and the adapter options ({} r={}, "
        "target_modules {}): {}; check that the adapter was trained for this base model",
        source, adapters::adapter_type_name(options.kind), options.config.rank,
        fmt::join(options.target_modules(), ","), fmt::join(problems, "; "));
  }
  std::vector<LayerAdapters> attached(model.weights.layers.size());
  for_each_target(model, options, [&](int64_t i, int j, const adapters::FrozenWeight& w) {
    const auto key = peft_module_key(i, j);
    std::vector<at::Tensor> values;
    for (auto& spec : adapters::adapter_tensor_specs(options, w.in_features(), w.out_features()))
      values.push_back(tensors.at(key + "." + spec.name));
    attached[i][j] =
        adapters::adapter_from_tensors(options, values, l4q_quantizing, model.device());
  });
  model.adapters = std::move(attached);
  model.adapter_options = options;
}

std::vector<TrainableTensor> adapter_parameters(const LlamaModel& model) {
  std::vector<TrainableTensor> params;
  for (int64_t i = 0; i < static_cast<int64_t>(model.adapters.size()); ++i) {
    for (int j = 0; j < kNumLlamaLinears; ++j) {
      const auto& a = model.adapters[i][j];
      if (!a) continue;
      const auto key = peft_module_key(i, j);
      const auto& w = linear_weight(model.weights.layers[i], j);
      const auto specs =
          adapters::adapter_tensor_specs(*model.adapter_options, w.in_features(), w.out_features());
      const auto tensors = adapters::adapter_tensors(*a);
      for (size_t k = 0; k < specs.size(); ++k)
        params.push_back({key + "." + specs[k].name, tensors[k], specs[k].weight_decay});
    }
  }
  return params;
}

std::vector<at::Tensor> layer_adapter_tensors(const LlamaModel& model, int64_t layer) {
  std::vector<at::Tensor> out;
  if (!model.has_adapters()) return out;
  for (const auto& a : model.adapters.at(layer)) {
    if (!a) continue;
    auto t = adapters::adapter_tensors(*a);
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> peft_lora_tensors(const LlamaModel& model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (int64_t i = 0; i < static_cast<int64_t>(model.adapters.size()); ++i) {
    for (int j = 0; j < kNumLlamaLinears; ++j) {
      const auto& a = model.adapters[i][j];
      if (!a) continue;
      const auto key = peft_module_key(i, j);
      auto [lora_a, lora_b] = adapters::peft_lora_of(*a, *model.adapter_options);
      out.emplace_back(key + ".lora_A.weight", lora_a);
      out.emplace_back(key + ".lora_B.weight", lora_b);
    }
  }
  return out;
}

bool l4q_quantizing(const LlamaModel& model) {
  TORCH_CHECK(model.adapter_options && model.adapter_options->kind == adapters::AdapterKind::kL4q,
              "l4q_quantizing: the model has no L4Q adapters");
  for (const auto& layer : model.adapters)
    for (const auto& a : layer)
      if (a) return std::get<adapters::L4qAdapter>(*a).quantizing;
  return false;
}

void start_l4q_quantization(LlamaModel& model) {
  TORCH_CHECK(model.adapter_options && model.adapter_options->kind == adapters::AdapterKind::kL4q,
              "start_l4q_quantization: the model has no L4Q adapters");
  for (int64_t i = 0; i < static_cast<int64_t>(model.adapters.size()); ++i)
    for (int j = 0; j < kNumLlamaLinears; ++j)
      if (auto& a = model.adapters[i][j])
        adapters::start_l4q_quantization(*a, linear_weight(model.weights.layers[i], j),
                                         *model.adapter_options);
}

MergedLinear merge_linear(const LlamaModel& model, int64_t layer, int linear,
                          const quant::WeightFormat& target, const at::Tensor& original) {
  static const adapters::AdapterOptions kNoAdapter{};
  const adapters::AdapterOptions& options =
      model.adapter_options ? *model.adapter_options : kNoAdapter;
  const auto& stored = linear_weight(model.weights.layers.at(static_cast<size_t>(layer)), linear);
  const adapters::Adapter* adapter = nullptr;
  if (model.has_adapters() && model.adapters[layer][linear])
    adapter = &*model.adapters[layer][linear];
  MergedLinear out;
  // Not adapted and already stored as `target`: kept as it is, nothing changes.
  if (adapter == nullptr && !original.defined() && quant::matches(stored.stored, target)) {
    out.weight = stored.stored;
    return out;
  }
  at::NoGradGuard no_grad;
  const adapters::FrozenWeight base =
      original.defined() ? adapters::FrozenWeight(original.to(model.device(), model.compute_dtype))
                         : stored;
  at::Tensor before;  // the layer as the forward used it, fp32 [out, in]
  if (adapter != nullptr) {
    auto merged = adapters::merge_adapter(base, *adapter, options, target, model.compute_dtype);
    before = std::move(merged.effective);
    out.weight = std::move(merged.weight);
    out.adapted = true;
    out.exact = merged.exact;
  } else {
    before = base.materialize(at::kFloat);
    out.weight =
        quant::store_weight(before, target, model.compute_dtype, peft_module_key(layer, linear));
  }
  out.changed = true;
  const at::Tensor delta = quant::dequantize(out.weight, at::kFloat) - before;
  const double err = delta.norm().item<double>(), ref = before.norm().item<double>();
  out.max_abs = delta.abs().max().item<double>();
  out.error_sq = err * err;
  out.weight_sq = ref * ref;
  return out;
}

void MergeReport::add(int64_t layer, int linear, const MergedLinear& m) {
  merged += m.adapted;
  exact += m.adapted && m.exact;
  if (!m.changed) return;
  const double err = std::sqrt(m.error_sq), ref = std::sqrt(m.weight_sq);
  errors.push_back({layer, linear, m.max_abs, ref > 0 ? err / ref : (err > 0 ? 1.0 : 0.0)});
  error_sq_ += m.error_sq;
  weight_sq_ += m.weight_sq;
  overall_relative = weight_sq_ > 0 ? std::sqrt(error_sq_ / weight_sq_) : 0;
}

MergeReport merge_adapters(LlamaModel& model, const quant::WeightFormat& target) {
  MergeReport report;
  for (int64_t i = 0; i < static_cast<int64_t>(model.weights.layers.size()); ++i) {
    for (int j = 0; j < kNumLlamaLinears; ++j) {
      MergedLinear m = merge_linear(model, i, j, target);
      report.add(i, j, m);
      if (m.changed)
        linear_weight(model.weights.layers[i], j) = adapters::FrozenWeight(std::move(m.weight));
    }
  }
  model.adapters.clear();
  model.adapter_options.reset();
  return report;
}

}  // namespace qlt::model
