// Typed access to the fields of a tokenizer JSON file (tokenizer.json, tokenizer_config.json)
// with messages that name the file, the JSON path and what was found.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace qlt::tokenizer {

// "a string", "the number 3", "an object", ... for messages.
std::string describe_json(const nlohmann::json& value);

// `value` at JSON path `path` (e.g. "model.merges[3]") of `origin` (the file).
struct JsonField {
  const nlohmann::json& value;
  std::string path;
  const std::string& origin;

  // The member `key` of this object (UserError when this is not an object or it is missing).
  JsonField at(const std::string& key) const;
  // The member `key`, or nullopt when it is missing (UserError when this is not an object).
  std::optional<JsonField> find(const std::string& key) const;
  // The member `key` when present and not null.
  std::optional<JsonField> find_non_null(const std::string& key) const;
  JsonField element(size_t index) const;  // of an array

  std::string string() const;
  bool boolean() const;
  int64_t integer() const;  // a whole number
  const nlohmann::json& array() const;
  const nlohmann::json& object() const;

  // UserError "<origin>: <path>: <what>".
  [[noreturn]] void fail(const std::string& what) const;
};

}  // namespace qlt::tokenizer
