// What the optimizers' state_meta and load_state share (adamw.cpp, adamw_8bit.cpp): the meta
// they write, and the checks of a checkpoint's optimizer state, which is validated in full
// before any live state changes; every problem is a UserError naming the tensor or meta key and
// what to do.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "optim/adamw.h"

namespace qlt::optim {

// {"steps_taken", "param_steps": {name: step}, "options": {lr, beta1, beta2, eps,
// weight_decay}}; `names` and `steps` are the parameters' in order. The optimizer adds its own
// keys to "options".
nlohmann::json saved_state_meta(int64_t steps_taken, const std::vector<std::string>& names,
                                const std::vector<int64_t>& steps, const AdamWOptions& options);

// meta must be a JSON object (the optimizer's state_meta as saved).
void expect_state_meta_object(const nlohmann::json& meta);

// The saved tensor `name`: it must exist with `shape` and `dtype`.
const at::Tensor& expect_saved_tensor(const std::map<std::string, at::Tensor>& tensors,
                                      const std::string& name, at::IntArrayRef shape,
                                      at::ScalarType dtype);

// meta at `key`: a non-negative integer (a step count).
int64_t expect_saved_count(const nlohmann::json& meta, const nlohmann::json::json_pointer& key);

// Every saved tensor is one of `expected` (this run's state tensor names).
void refuse_unexpected_state(const std::map<std::string, at::Tensor>& tensors,
                             const std::set<std::string>& expected);

}  // namespace qlt::optim
