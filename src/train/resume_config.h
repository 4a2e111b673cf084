// Which config changes a resumed run accepts. A checkpoint continues bit-exactly only with the
// model, adapter, data, optimizer, schedule and batch settings it was trained with; run
// length, logging, evaluation, checkpointing, threads, device and activation checkpointing
// (which does not change gradients) may differ.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qlt::train {

// True for the keys (dotted paths of TrainConfig) that may differ on resume.
bool may_change_on_resume(const std::string& key);

// "adapter.rank: the checkpoint has 8, this config has 16" for every key that must match and
// differs between two effective configs (config_to_json), in table order.
std::vector<std::string> resume_incompatibilities(const nlohmann::json& checkpoint_config,
                                                  const nlohmann::json& current_config);

// SHA-1 of the keys that must match (stored in checkpoints; equal hashes = compatible).
std::string resume_config_hash(const nlohmann::json& config);

}  // namespace qlt::train
