// trainer_state.json of a checkpoint folder: where the run stands (step, tokens, data cursor,
// optimizer counters) and the config it was trained with. Written by the trainer
// (trainer_state_json), read back here with every field checked, so a damaged or hand-edited
// file is a UserError naming the file and the field, never a raw library message.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/batcher.h"

namespace qlt::train {

inline constexpr const char* kTrainerStateFile = "trainer_state.json";
inline constexpr const char* kTrainerStateFormat = "qlora-train trainer state 1";

struct TrainerState {
  int64_t step = 0;          // optimizer steps done, >= 0
  int64_t tokens_seen = 0;   // non-padding input tokens over the run, >= 0
  double train_seconds = 0;  // wall time of optimizer steps over the run, finite, >= 0
  data::DataCursor data_cursor;
  nlohmann::json optimizer;  // object; its content is checked by the optimizer's load_state
  nlohmann::json config;     // the effective config (config_to_json), an object
  std::string config_hash;   // resume_config_hash(config) when written
};

// Reads and checks `file`. UserError "<file>: <field> ..." for a missing, mistyped or
// out-of-range field, a wrong "format", or a config_hash that does not match the config.
TrainerState read_trainer_state(const std::filesystem::path& file);

// The JSON that read_trainer_state reads back; `extra` (e.g. the schedule, for a person
// reading the file) is merged in.
nlohmann::json trainer_state_json(const TrainerState& state, const nlohmann::json& extra);

}  // namespace qlt::train
