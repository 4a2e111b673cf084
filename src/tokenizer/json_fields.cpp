#include "tokenizer/json_fields.h"

#include "core/errors.h"

namespace qlt::tokenizer {

using nlohmann::json;

std::string describe_json(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return v.get<bool>() ? "true" : "false";
    case json::value_t::string:
      return "the string \"" + abridged(v.get_ref<const std::string&>(), 80) + "\"";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return "the number " + v.dump();
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a value of another kind";
  }
}

void JsonField::fail(const std::string& what) const {
  user_error("{}: {}: {}", origin, path.empty() ? "the top level" : path, what);
}

const json& JsonField::object() const {
  if (!value.is_object()) fail("must be an object, found " + describe_json(value));
  return value;
}

const json& JsonField::array() const {
  if (!value.is_array()) fail("must be an array, found " + describe_json(value));
  return value;
}

std::optional<JsonField> JsonField::find(const std::string& key) const {
  const json& obj = object();
  const auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  return JsonField{*it, path.empty() ? key : path + "." + key, origin};
}

std::optional<JsonField> JsonField::find_non_null(const std::string& key) const {
  auto f = find(key);
  if (f && f->value.is_null()) return std::nullopt;
  return f;
}

JsonField JsonField::at(const std::string& key) const {
  auto f = find(key);
  if (!f) fail("has no key \"" + key + "\"");
  return *f;
}

JsonField JsonField::element(size_t index) const {
  return JsonField{array().at(index), path + "[" + std::to_string(index) + "]", origin};
}

std::string JsonField::string() const {
  if (!value.is_string()) fail("must be a string, found " + describe_json(value));
  return value.get<std::string>();
}

bool JsonField::boolean() const {
  if (!value.is_boolean()) fail("must be true or false, found " + describe_json(value));
  return value.get<bool>();
}

int64_t JsonField::integer() const {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) fail("is too large: " + value.dump());
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  fail("must be a whole number, found " + describe_json(value));
}

}  // namespace qlt::tokenizer
