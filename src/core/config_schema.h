// The machinery behind config.cpp's table of keys: one ConfigKey per JSON leaf, declaring its
// dotted path, type, allowed values, meaning and how to read/write the TrainConfig member.
//
// The default of a key is read from a default-constructed TrainConfig through the same
// accessor, so the struct initializers in config.h are the only place a default is written.
//
// Adding a key (see config.cpp, config_keys()):
//   1. add the member with its default to the struct in config.h;
//   2. add one entry to the table:
//        key("training.max_steps", "optimizer steps to run",
//            [](auto& c) { return &c.training.max_steps; }).range(1, kInt64Max),
//   3. `qlora-train config --keys` now lists it; parsing, --set and the dump follow.
// A new section needs nothing more: sections are the prefixes of the keys' paths.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/config.h"

namespace qlt {

inline constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

enum class KeyType { kString, kInt, kFloat, kBool, kStringList };

// "string", "int", "float", "bool", "list<string>": the TYPE column of --keys.
const char* key_type_name(KeyType type);

struct ConfigKey {
  std::string path;  // dotted JSON path, e.g. "data.max_seq_len"
  KeyType type = KeyType::kString;
  std::string meaning;           // one line, shown by --keys
  nlohmann::json default_value;  // read from TrainConfig{} by key()
  bool is_required = false;      // must be present (and, for strings, non-empty)

  std::vector<std::string> choices;  // kString / kStringList: allowed values; empty = any
  int64_t int_min = std::numeric_limits<int64_t>::min();  // kInt: inclusive range
  int64_t int_max = kInt64Max;
  double float_min = -std::numeric_limits<double>::infinity();  // kFloat: inclusive range
  double float_max = std::numeric_limits<double>::infinity();
  // kString with a pattern that choices cannot express (e.g. "cuda:N"): returns "" when the
  // value is fine, else why not; `allowed` is what --keys and the error show instead.
  std::function<std::string(const std::string&)> validate;
  std::string allowed;

  std::function<nlohmann::json(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const nlohmann::json&)> set;  // value already checked

  // Builders, chained onto key(...) in the table.
  ConfigKey& required() {
    is_required = true;
    return *this;
  }
  ConfigKey& range(int64_t lo, int64_t hi) {  // kInt, inclusive
    if (type != KeyType::kInt) throw std::logic_error(path + ": range() on a non-int key");
    int_min = lo, int_max = hi;
    return *this;
  }
  ConfigKey& float_range(double lo, double hi) {  // kFloat, inclusive
    if (type != KeyType::kFloat)
      throw std::logic_error(path + ": float_range() on a non-float key");
    float_min = lo, float_max = hi;
    return *this;
  }
  ConfigKey& one_of(std::vector<std::string> values) {
    choices = std::move(values);
    return *this;
  }
  ConfigKey& check(std::string allowed_text, std::function<std::string(const std::string&)> f) {
    allowed = std::move(allowed_text);
    validate = std::move(f);
    return *this;
  }
};

template <typename T>
constexpr KeyType key_type_of() {
  static_assert(std::is_same_v<T, std::string> || std::is_same_v<T, bool> ||
                    std::is_same_v<T, int64_t> || std::is_same_v<T, double> ||
                    std::is_same_v<T, std::vector<std::string>>,
                "config members are string, bool, int64_t, double or vector<string>");
  if constexpr (std::is_same_v<T, std::string>) return KeyType::kString;
  if constexpr (std::is_same_v<T, bool>) return KeyType::kBool;
  if constexpr (std::is_same_v<T, int64_t>) return KeyType::kInt;
  if constexpr (std::is_same_v<T, double>) return KeyType::kFloat;
  return KeyType::kStringList;
}

// The defaults: one TrainConfig built from the struct initializers. (A function rather than a
// TrainConfig{} temporary in key(): GCC 12 hits an internal compiler error on the latter once
// TrainConfig holds a vector<string> member with a braced default.)
const TrainConfig& default_train_config();

// Declares a key. `access` is a generic lambda returning a pointer to the member, so one
// lambda serves reading (const TrainConfig&) and writing (TrainConfig&).
template <typename Access>
ConfigKey key(std::string path, std::string meaning, Access access) {
  using Member = std::remove_pointer_t<decltype(access(std::declval<TrainConfig&>()))>;
  ConfigKey k;
  k.path = std::move(path);
  k.type = key_type_of<Member>();
  k.meaning = std::move(meaning);
  k.get = [access](const TrainConfig& c) { return nlohmann::json(*access(c)); };
  k.set = [access](TrainConfig& c, const nlohmann::json& v) { *access(c) = v.get<Member>(); };
  k.default_value = k.get(default_train_config());
  return k;
}

// The table (defined in config.cpp), in the order --keys prints it.
const std::vector<ConfigKey>& config_keys();

// Checks `value` against the key's type, range and choices and returns it normalized (an
// integral float such as 256.0 becomes the integer 256). Throws UserError prefixed by
// `where` (a file name or a --set argument) naming the key and the fix.
nlohmann::json check_value(const ConfigKey& key, const nlohmann::json& value,
                           std::string_view where);

// "a string (\"256\")", "a number (2.5)", "null": what the user wrote, for messages.
std::string describe_json(const nlohmann::json& value);

// What --keys shows for a value / the allowed values of a key.
std::string describe_default(const ConfigKey& key);
std::string describe_allowed(const ConfigKey& key);

}  // namespace qlt
