#include "train/trainer_state.h"

#include <fmt/format.h>

#include <cmath>

#include "core/errors.h"
#include "core/json_reader.h"
#include "train/resume_config.h"

namespace qlt::train {
using nlohmann::json;

namespace {

struct Reader {
  const json& root;
  std::string where;

  [[noreturn]] void bad(const char* key, const std::string& what) const {
    user_error(
        "{}: \"{}\" {}; the checkpoint is damaged or was not written by qlora-train: resume "
        "from another checkpoint (--resume PATH) or start a new run",
        where, key, what);
  }
  const json& field(const char* key) const {
    const auto it = root.find(key);
    if (it == root.end()) bad(key, "is missing");
    return *it;
  }
  int64_t count(const char* key) const {
    const json& v = field(key);
    if (!v.is_number_integer()) bad(key, fmt::format("must be an integer, not {}", v.type_name()));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      bad(key, fmt::format("is out of range ({})", v.dump()));
    const int64_t n = v.get<int64_t>();
    if (n < 0) bad(key, fmt::format("must not be negative (it is {})", n));
    return n;
  }
  double seconds(const char* key) const {
    const json& v = field(key);
    if (!v.is_number()) bad(key, fmt::format("must be a number, not {}", v.type_name()));
    const double s = v.get<double>();
    if (!std::isfinite(s) || s < 0) bad(key, fmt::format("must be a non-negative number ({})", s));
    return s;
  }
  const json& object(const char* key) const {
    const json& v = field(key);
    if (!v.is_object()) bad(key, fmt::format("must be an object, not {}", v.type_name()));
    return v;
  }
  std::string string(const char* key) const {
    const json& v = field(key);
    if (!v.is_string()) bad(key, fmt::format("must be a string, not {}", v.type_name()));
    return v.get<std::string>();
  }
};

}  // namespace

TrainerState read_trainer_state(const std::filesystem::path& file) {
  const json root = read_json_file(file, "; a checkpoint folder holds it");
  const std::string where = file.string();
  if (!root.is_object())
    user_error("{}: must be a JSON object, not {}; the checkpoint is damaged", where,
               root.type_name());
  const Reader r{root, where};
  if (const std::string format = r.string("format"); format != kTrainerStateFormat)
    r.bad("format", fmt::format("is \"{}\", expected \"{}\"", format, kTrainerStateFormat));
  TrainerState s;
  s.step = r.count("step");
  s.tokens_seen = r.count("tokens_seen");
  s.train_seconds = r.seconds("train_seconds");
  s.data_cursor = data::cursor_from_json(r.object("data_cursor"), where);
  if (s.data_cursor.epoch < 0 || s.data_cursor.position < 0 || s.data_cursor.num_examples < 0)
    r.bad("data_cursor", "has a negative epoch, position or example count");
  s.optimizer = r.object("optimizer");
  s.config = r.object("config");
  s.config_hash = r.string("config_hash");
  if (s.config_hash != resume_config_hash(s.config))
    r.bad("config_hash",
          "does not match the \"config\" recorded beside it (the file was edited by hand)");
  return s;
}

json trainer_state_json(const TrainerState& s, const json& extra) {
  json out = {{"format", kTrainerStateFormat},
              {"step", s.step},
              {"tokens_seen", s.tokens_seen},
              {"train_seconds", s.train_seconds},
              {"data_cursor", data::cursor_to_json(s.data_cursor)},
              {"optimizer", s.optimizer},
              {"config", s.config},
              {"config_hash", s.config_hash}};
  for (const auto& [key, value] : extra.items()) out[key] = value;
  return out;
}

}  // namespace qlt::train
