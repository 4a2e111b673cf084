// The optimizer the trainer drives, chosen by optimizer.type from ONE table (optimizer.cpp): each
// row names a type, the state it keeps (fp32 AdamW or 8-bit AdamW) and whether its state is
// paged (optim/paged_state.h). Paging needs CUDA managed memory; where there is none (a CPU
// build or CPU tensors) a paged type runs as its non-paged twin, with identical numerics, and
// says so once in the log (when the optimizer is built).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "optim/adamw.h"
#include "optim/adamw_8bit.h"

namespace qlt::optim {

enum class OptimizerState { kFp32, k8bit };  // AdamW (torch) | AdamW8bit (bitsandbytes)

struct OptimizerType {
  const char* name;      // the optimizer.type value
  OptimizerState state;  // which optimizer and state layout
  bool paged;            // state in CUDA managed memory (METHODS.md §7)
};

// The rows of the table, in table order: the optimizer.type choices (core/config.cpp lists the
// same names; a test checks they agree).
std::vector<std::string> optimizer_type_names();
// The row named `name`; a UserError naming optimizer.type and the choices otherwise.
const OptimizerType& optimizer_type(const std::string& name);
// True when `a` and `b` are rows that keep the same state (equal, or a paged type and its
// non-paged twin): a checkpoint of one resumes the other. False for unknown names.
bool same_optimizer_state(const std::string& a, const std::string& b);

class Optimizer {
 public:
  // `params`, `options`, `no_weight_decay` as AdamW's constructor.
  Optimizer(const OptimizerType& type, std::vector<std::pair<std::string, at::Tensor>> params,
            AdamWOptions options, const std::set<std::string>& no_weight_decay = {});

  const OptimizerType& type() const { return *type_; }
  // True when the state is in CUDA managed memory (a paged type on a GPU that supports it).
  bool paged() const { return paged_; }
  // Paged: prefetches the state to the GPU first (optim/paged_state.h). Then the update.
  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const;

  // Checkpointing: the tensors and meta of the optimizer behind the type; state_meta() adds
  // "type". load_state refuses meta of a type with another state layout (naming both; a paged
  // type and its non-paged twin share theirs); meta without "type" (older checkpoints) is
  // taken as adamw's. Other errors: as AdamW / AdamW8bit::load_state.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  nlohmann::json state_meta() const;
  void load_state(const std::map<std::string, at::Tensor>& tensors, const nlohmann::json& meta);

 private:
  std::vector<at::Tensor> state_values() const;

  const OptimizerType* type_;
  at::Device device_;  // where the parameters (and so the state) live
  bool paged_;
  std::variant<AdamW, AdamW8bit> impl_;
};

}  // namespace qlt::optim
