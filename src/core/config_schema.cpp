#include "core/config_schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/errors.h"

namespace qlt {

using nlohmann::json;

std::string describe_json(const json& value) {
  std::string text = value.dump();
  if (text.size() > 60) {  // keep the message on one readable line
    text.resize(57);
    text.append("...");
  }
  if (value.is_null()) return "null";
  if (value.is_boolean()) return fmt::format("a boolean ({})", text);
  if (value.is_number()) return fmt::format("a number ({})", text);
  if (value.is_string()) return fmt::format("a string ({})", text);
  if (value.is_array()) return fmt::format("an array ({})", text);
  return fmt::format("an object ({})", text);
}

namespace {

std::string join(const std::vector<std::string>& values, std::string_view separator) {
  return fmt::format("{}", fmt::join(values, separator));
}

[[noreturn]] void type_error(const ConfigKey& key, const json& value, std::string_view where,
                             std::string_view expected, std::string_view fix) {
  user_error("{}: {}: expected {}, got {}; {}", where, key.path, expected, describe_json(value),
             fix);
}

std::string example_of(const ConfigKey& key) { return key.default_value.dump(); }

json check_string(const ConfigKey& key, const json& value, std::string_view where) {
  if (!value.is_string()) {
    type_error(key, value, where, "a string",
               fmt::format("write it in double quotes, e.g. {}", example_of(key)));
  }
  const auto& text = value.get_ref<const std::string&>();
  if (!key.choices.empty() &&
      std::find(key.choices.begin(), key.choices.end(), text) == key.choices.end()) {
    user_error("{}: {}: {} is not allowed; use one of: {}", where, key.path, value.dump(),
               join(key.choices, ", "));
  }
  if (key.validate) {
    if (std::string why = key.validate(text); !why.empty()) {
      user_error("{}: {}: {} is not allowed ({}); use {}", where, key.path, value.dump(), why,
                 key.allowed);
    }
  }
  return value;
}

[[noreturn]] void int_out_of_range(const ConfigKey& key, const json& value,
                                   std::string_view where) {
  user_error("{}: {}: {} is out of range; allowed: {}", where, key.path, value.dump(),
             describe_allowed(key));
}

// JSON has one number type, and generators (Python's json with floats, jq) may write 256 as
// 256.0 or 2.56e2; an integral float is therefore accepted as an integer. 2.5 is not.
int64_t to_int64(const ConfigKey& key, const json& value, std::string_view where) {
  const std::string fix =
      fmt::format("write a whole number without quotes, e.g. {}", example_of(key));
  if (value.is_number_unsigned()) {
    if (value.get<uint64_t>() > static_cast<uint64_t>(kInt64Max)) {
      int_out_of_range(key, value, where);
    }
    return static_cast<int64_t>(value.get<uint64_t>());
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (!value.is_number_float()) type_error(key, value, where, "an integer", fix);
  const double number = value.get<double>();
  if (!std::isfinite(number) || std::trunc(number) != number) {
    type_error(key, value, where, "an integer", fix);
  }
  // 2^63 is exactly representable; every double below it (and >= -2^63) fits in int64_t.
  if (number >= 9223372036854775808.0 || number < -9223372036854775808.0) {
    int_out_of_range(key, value, where);
  }
  return static_cast<int64_t>(number);
}

json check_int(const ConfigKey& key, const json& value, std::string_view where) {
  const int64_t number = to_int64(key, value, where);
  if (number < key.int_min || number > key.int_max) int_out_of_range(key, value, where);
  return json(number);
}

json check_float(const ConfigKey& key, const json& value, std::string_view where) {
  if (!value.is_number()) {
    type_error(key, value, where, "a number",
               fmt::format("write it without quotes, e.g. {}", example_of(key)));
  }
  const double number = value.get<double>();
  if (!(number >= key.float_min && number <= key.float_max)) {
    user_error("{}: {}: {} is out of range; allowed: {}", where, key.path, value.dump(),
               describe_allowed(key));
  }
  return json(number);
}

json check_bool(const ConfigKey& key, const json& value, std::string_view where) {
  if (!value.is_boolean()) {
    type_error(key, value, where, "a boolean", "write true or false, without quotes");
  }
  return value;
}

json check_string_list(const ConfigKey& key, const json& value, std::string_view where) {
  const std::string fix = fmt::format("write an array of strings, e.g. {}", example_of(key));
  if (!value.is_array()) type_error(key, value, where, "an array of strings", fix);
  for (const auto& element : value) {
    if (!element.is_string()) type_error(key, element, where, "an array of strings", fix);
    const auto& text = element.get_ref<const std::string&>();
    if (!key.choices.empty() &&
        std::find(key.choices.begin(), key.choices.end(), text) == key.choices.end()) {
      user_error("{}: {}: element {} is not allowed; each must be one of: {}", where, key.path,
                 element.dump(), join(key.choices, ", "));
    }
  }
  return value;
}

}  // namespace

const char* key_type_name(KeyType type) {
  switch (type) {
    case KeyType::kString:
      return "string";
    case KeyType::kInt:
      return "int";
    case KeyType::kFloat:
      return "float";
    case KeyType::kBool:
      return "bool";
    case KeyType::kStringList:
      return "list<string>";
  }
  return "?";
}

json check_value(const ConfigKey& key, const json& value, std::string_view where) {
  switch (key.type) {
    case KeyType::kString:
      return check_string(key, value, where);
    case KeyType::kInt:
      return check_int(key, value, where);
    case KeyType::kFloat:
      return check_float(key, value, where);
    case KeyType::kBool:
      return check_bool(key, value, where);
    case KeyType::kStringList:
      return check_string_list(key, value, where);
  }
  throw std::logic_error("check_value: unknown key type");
}

std::string describe_default(const ConfigKey& key) {
  return key.is_required ? "(required)" : key.default_value.dump();
}

std::string describe_allowed(const ConfigKey& key) {
  if (!key.allowed.empty()) return key.allowed;
  if (!key.choices.empty()) return join(key.choices, "|");
  switch (key.type) {
    case KeyType::kInt:
      if (key.int_min == std::numeric_limits<int64_t>::min() && key.int_max == kInt64Max) {
        return "any integer";
      }
      if (key.int_max == kInt64Max) return fmt::format(">= {}", key.int_min);
      return fmt::format("{}..{}", key.int_min, key.int_max);
    case KeyType::kFloat:
      if (std::isinf(key.float_min) && std::isinf(key.float_max)) return "any number";
      if (std::isinf(key.float_max)) return fmt::format(">= {}", key.float_min);
      return fmt::format("{}..{}", key.float_min, key.float_max);
    case KeyType::kBool:
      return "true|false";
    default:
      return "any";
  }
}

}  // namespace qlt
