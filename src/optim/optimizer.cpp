#include "optim/optimizer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "optim/paged_state.h"

namespace qlt::optim {
namespace {

// THE table of optimizer.type values, one row per type.
constexpr OptimizerType kOptimizerTypes[] = {
    {"adamw", OptimizerState::kFp32, false},
    {"adamw_8bit", OptimizerState::k8bit, false},
    {"paged_adamw", OptimizerState::kFp32, true},
    {"paged_adamw_8bit", OptimizerState::k8bit, true},
};

// The non-paged row with the same state: what a paged type runs as without managed memory.
const OptimizerType& unpaged_twin(const OptimizerType& type) {
  for (const auto& row : kOptimizerTypes)
    if (!row.paged && row.state == type.state) return row;
  TORCH_CHECK(false, "optimizer type ", type.name, ": no non-paged twin in the table");
}

// Where the parameters live (all on one device: the trainer puts the adapters with the model).
at::Device params_device(const std::vector<std::pair<std::string, at::Tensor>>& params) {
  return params.empty() ? at::Device(at::kCPU) : params.front().second.device();
}

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

bool same_optimizer_state(const std::string& a, const std::string& b) {
  const OptimizerType *row_a = nullptr, *row_b = nullptr;
  for (const auto& row : kOptimizerTypes) {
    if (a == row.name) row_a = &row;
    if (b == row.name) row_b = &row;
  }
  return row_a != nullptr && row_b != nullptr && row_a->state == row_b->state;
}

Optimizer::Optimizer(const OptimizerType& type,
                     std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options,
                     const std::set<std::string>& no_weight_decay)
    : type_(&type),
      device_(params_device(params)),
      paged_(type.paged && paging_supported(device_)),
      impl_(make_optimizer(type, std::move(params), options, no_weight_decay)) {
  if (paged_) {
    auto page = [](const at::Tensor& t) {
      return t.numel() >= kMinPagedElements ? to_managed_memory(t) : t;
    };
    std::visit([&](auto& o) { o.relocate_state(page); }, impl_);
  } else if (type.paged) {
    spdlog::info(
        "optimizer.type {}: the parameters are on {}, which has no CUDA managed memory, so the "
        "state is not paged: it runs as {} (the same numbers)",
        type.name, device_.str(), unpaged_twin(type).name);
  }
}

void Optimizer::step(double lr) {
  // Paged state: bring it to the GPU before the update touches it (as far as there is room).
  if (paged_) prefetch_to_device(state_values());
  std::visit([lr](auto& o) { o.step(lr); }, impl_);
}

std::vector<at::Tensor> Optimizer::state_values() const {
  std::vector<at::Tensor> values;
  for (auto& [name, tensor] : state_tensors()) values.push_back(tensor);
  return values;
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
    // Paging changes where the state lives, not what it is: adamw and paged_adamw (adamw_8bit
    // and paged_adamw_8bit) resume each other's state, e.g. to turn paging on after an OOM.
    if (!same_optimizer_state(saved, type_->name)) {
      user_error(
          "the checkpoint's optimizer state is of optimizer.type \"{}\", this run's "
          "optimizer.type is \"{}\"; resume with the type it was saved with (or its paged / "
          "non-paged twin), or start a new run",
          saved, type_->name);
    }
  }
  std::visit([&](auto& o) { o.load_state(tensors, meta); }, impl_);
}

}  // namespace qlt::optim
