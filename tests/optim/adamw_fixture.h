// The torch reference run in tests/fixtures/adamw (scripts/fixtures/make_optim_fixtures.py):
// four fp32 parameters, 10 AdamW steps with cosine warmup, 2 accumulated micro-steps and
// global-norm clipping per step. Helpers to replay it with our optimizer, schedule and clip.
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "test_paths.h"

namespace adamw_fixture {

inline const qlt::io::SafetensorsFile& file() {
  static auto f = qlt::io::SafetensorsFile::open(std::filesystem::path(QLT_SOURCE_DIR) /
                                                 "tests/fixtures/adamw/adamw.safetensors");
  return f;
}

inline const std::vector<std::string> kNames = {"a", "b", "c", "d"};
inline constexpr int kSteps = 10;
inline constexpr int kMicroSteps = 2;
inline constexpr double kMaxNorm = 1.0;

// Parameter "d" gets a gradient on even steps only (the script leaves it out of the loss).
inline bool has_grad(const std::string& name, int step) { return name != "d" || step % 2 == 0; }

inline qlt::optim::AdamWOptions options() {
  qlt::optim::AdamWOptions o;
  o.lr = 1e-2;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  return o;
}

inline qlt::optim::ScheduleOptions schedule() {
  return {qlt::optim::ScheduleType::kCosine, /*warmup_steps=*/3, /*total_steps=*/kSteps, 1e-2};
}

// Fresh leaf parameters from tensors (cloned so the fixture mapping is never written).
inline std::vector<std::pair<std::string, at::Tensor>> leaves(
    const std::vector<at::Tensor>& values) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < kNames.size(); ++i)
    out.emplace_back(kNames[i], values[i].clone().set_requires_grad(true));
  return out;
}

inline std::vector<std::pair<std::string, at::Tensor>> initial_params() {
  std::vector<at::Tensor> values;
  for (const auto& n : kNames) values.push_back(file().tensor("init." + n));
  return leaves(values);
}

inline std::vector<at::Tensor> tensors_of(
    const std::vector<std::pair<std::string, at::Tensor>>& params) {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : params) out.push_back(p);
  return out;
}

// The micro-step backwards of optimizer step k, as the script does them: loss = sum over the
// parameters of (p * G[k,m]).sum(), scaled by 1/2, backward; autograd accumulates into .grad.
inline void accumulate_grads(const std::vector<std::pair<std::string, at::Tensor>>& params,
                             int step) {
  for (int m = 0; m < kMicroSteps; ++m) {
    at::Tensor loss;
    for (const auto& [name, p] : params) {
      if (!has_grad(name, step)) continue;
      auto g = file().tensor("grad." + std::to_string(step) + "." + std::to_string(m) + "." + name);
      auto term = (p * g).sum();
      loss = loss.defined() ? loss + term : term;
    }
    torch::autograd::backward({loss / kMicroSteps});
  }
}

}  // namespace adamw_fixture
