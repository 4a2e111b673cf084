#include "optim/optimizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/errors.h"

namespace qlt::optim {
namespace {

// THE table of optimizer.type values, one row per type. (paged_adamw / paged_adamw_8bit: rows
// {name, state, true} once paging exists.)
constexpr OptimizerType kOptimizerTypes[] = {
    {"adamw", OptimizerState::kFp32, false},
    {"adamw_8bit", OptimizerState::k8bit, false},
};

std::variant<AdamW, AdamW8bit> make_optimizer(
    const OptimizerType& type, std::vector<std::pair<std::string, at::Tensor>> params,
    AdamWOptions options, const std::set<std::string>& no_weight_decay) {
  switch (type.state) {
    case OptimizerState::kFp32:
      return AdamW(std::move(params), options, no_weight_decay);
    case OptimizerState::k8bit:
      return AdamW8bit(std::move(params), options, no_weight_decay);
  }
  TORCH_CHECK(false, "optimizer type ", type.name, ": unknown state kind");
}

}  // namespace

std::vector<std::string> optimizer_type_names() {
  std::vector<std::string> names;
  for (const auto& row : kOptimizerTypes) names.emplace_back(row.name);
  return names;
}

const OptimizerType& optimizer_type(const std::string& name) {
  for (const auto& row : kOptimizerTypes)
    if (name == row.name) return row;
  user_error("optimizer.type \"{}\" is unknown; use one of {}", name,
             fmt::join(optimizer_type_names(), ", "));
}

Optimizer::Optimizer(const OptimizerType& type,
                     std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
                     const std::set<std::string>& no_weight_decay)
    : type_(&type), impl_(make_optimizer(type, std::move(params), options, no_weight_decay)) {}

void Optimizer::step(double lr) {
  std::visit([lr](auto& o) { o.step(lr); }, impl_);
}

void Optimizer::zero_grad() {
  std::visit([](auto& o) { o.zero_grad(); }, impl_);
}

int64_t Optimizer::steps_taken() const {
  return std::visit([](const auto& o) { return o.steps_taken(); }, impl_);
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::state_tensors() const {
  return std::visit([](const auto& o) { return o.state_tensors(); }, impl_);
}

nlohmann::json Optimizer::state_meta() const {
  auto meta = std::visit([](const auto& o) { return o.state_meta(); }, impl_);
  meta["type"] = type_->name;
  return meta;
}

void Optimizer::load_state(const std::map<std::string, at::Tensor>& tensors,
                           const nlohmann::json& meta) {
  if (meta.is_object()) {
    const auto it = meta.find("type");
    const std::string saved =
        it == meta.end() ? "adamw" : (it->is_string() ? it->get<std::string>() : it->dump());
    if (saved != type_->name) {
      user_error(
          "the checkpoint's optimizer state is of optimizer.type \"{}\", this run's "
          "optimizer.type is \"{}\"; resume with the type it was saved with, or start a new run",
          saved, type_->name);
    }
  }
  std::visit([&](auto& o) { o.load_state(tensors, meta); }, impl_);
}

}  // namespace qlt::optim
