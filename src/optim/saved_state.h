// Checks shared by the optimizers' load_state (adamw.cpp, adamw_8bit.cpp): a checkpoint's
// optimizer state is validated in full before any live state changes, and every problem is a
// UserError naming the tensor or meta key and what to do.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace qlt::optim {

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
