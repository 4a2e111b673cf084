#include "optim/saved_state.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/errors.h"

namespace qlt::optim {
namespace {

std::string saved_shape_text(at::IntArrayRef shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

void expect_state_meta_object(const nlohmann::json& meta) {
  if (!meta.is_object()) {
    user_error("optimizer state meta must be a JSON object, got {}; the checkpoint is damaged",
               meta.dump());
  }
}

const at::Tensor& expect_saved_tensor(const std::map<std::string, at::Tensor>& tensors,
                                      const std::string& name, at::IntArrayRef shape,
                                      at::ScalarType dtype) {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    user_error(
        "optimizer state tensor '{}' is missing from the checkpoint: it was written for a "
        "different set of trainable parameters or another optimizer.type; resume with the "
        "configuration it was saved with, or start a new run",
        name);
  }
  const at::Tensor& t = it->second;
  if (!t.defined() || t.scalar_type() != dtype || !t.sizes().equals(shape)) {
    user_error(
        "optimizer state tensor '{}' in the checkpoint is {} {}, expected {} {}: the checkpoint "
        "was written for a different adapter configuration (rank, target modules) or "
        "optimizer.type; resume with the configuration it was saved with, or start a new run",
        name, t.defined() ? std::string(c10::toString(t.scalar_type())) : "undefined",
        t.defined() ? saved_shape_text(t.sizes()) : "", c10::toString(dtype),
        saved_shape_text(shape));
  }
  return t;
}

int64_t expect_saved_count(const nlohmann::json& meta, const nlohmann::json::json_pointer& key) {
  if (!meta.contains(key) || !meta.at(key).is_number_integer() || meta.at(key).get<int64_t>() < 0) {
    user_error(
        "optimizer state meta: '{}' is missing or not a non-negative integer (got {}); the "
        "checkpoint's optimizer state is damaged or from another program",
        key.to_string(), meta.contains(key) ? meta.at(key).dump() : "nothing");
  }
  return meta.at(key).get<int64_t>();
}

void refuse_unexpected_state(const std::map<std::string, at::Tensor>& tensors,
                             const std::set<std::string>& expected) {
  for (const auto& [name, t] : tensors) {
    if (!expected.count(name)) {
      user_error(
          "the checkpoint has optimizer state tensor '{}' for a parameter this run does not "
          "train, or of another optimizer.type: it was written for a different adapter "
          "configuration or optimizer.type; resume with the configuration it was saved with, "
          "or start a new run",
          name);
    }
  }
}

nlohmann::json saved_state_meta(int64_t steps_taken, const std::vector<std::string>& names,
                                const std::vector<int64_t>& steps, const AdamWOptions& options) {
  nlohmann::json param_steps = nlohmann::json::object();
  for (size_t i = 0; i < names.size(); ++i) param_steps[names[i]] = steps[i];
  return {{"steps_taken", steps_taken},
          {"param_steps", param_steps},
          {"options",
           {{"lr", options.lr},
            {"beta1", options.beta1},
            {"beta2", options.beta2},
            {"eps", options.eps},
            {"weight_decay", options.weight_decay}}}};
}

}  // namespace qlt::optim
