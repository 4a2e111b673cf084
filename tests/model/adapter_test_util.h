// Small helpers for tests that attach adapters to a model.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "adapters/adapter.h"
#include "model/llama.h"
#include "test_common.h"

namespace qlt::test {

// tests/fixtures/blora_peft/: a Q-BLoRA adapter and PEFT's run of its expanded rank-λr LoRA
// (scripts/fixtures/make_blora_peft.py).
inline const std::filesystem::path kBloraPeftDir = kFixtures / "blora_peft";

// tests/fixtures/llama_gqa (a small GQA llama saved by transformers), on the CPU.
inline model::LlamaModel load_llama_gqa(at::ScalarType dtype = at::kFloat) {
  return model::load_llama(kFixtures / "llama_gqa", dtype, at::kCPU);
}

// The adapter options of an adapter section, through the one conversion.
inline adapters::AdapterOptions adapter_opts(
    const AdapterConfig& c, const quant::WeightFormat& format = quant::DenseFormat{}) {
  return adapters::adapter_options(c, format);
}

// model::adapter_parameters as (name, tensor) pairs.
inline std::vector<std::pair<std::string, at::Tensor>> lora_params(const model::LlamaModel& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : model::adapter_parameters(m)) out.emplace_back(p.name, p.tensor);
  return out;
}

}  // namespace qlt::test
