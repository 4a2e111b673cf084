// The key machinery (config_schema.h) for the types no key uses yet (float, bool, string
// list), did-you-mean, and `config --keys` (describe_config_keys).
#include <catch2/catch.hpp>
#include <sstream>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/did_you_mean.h"

using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::check_value;
using qlt::ConfigKey;
using qlt::KeyType;

namespace {

// A key as key() would declare it, without a TrainConfig member behind it.
ConfigKey make_key(const std::string& path, KeyType type, json default_value) {
  ConfigKey key;
  key.path = path;
  key.type = type;
  key.default_value = std::move(default_value);
  return key;
}

}  // namespace

TEST_CASE("config schema: float keys accept any number within range", "[config]") {
  ConfigKey lr = make_key("optimizer.lr", KeyType::kFloat, 2e-4);
  lr.float_range(0.0, 1.0);
  CHECK(check_value(lr, 0.5, "f").get<double>() == 0.5);
  CHECK(check_value(lr, 1, "f").get<double>() == 1.0);  // an integer is a number too
  REQUIRE_THROWS_WITH(check_value(lr, "0.5", "f"),
                      Contains("f: optimizer.lr: expected a number, got a string"));
  REQUIRE_THROWS_WITH(check_value(lr, 1.5, "f"),
                      Contains("optimizer.lr: 1.5 is out of range; allowed: 0..1"));
  CHECK(qlt::describe_allowed(lr) == "0..1");
}

TEST_CASE("config schema: bool keys take only true or false", "[config]") {
  const ConfigKey packing = make_key("data.packing", KeyType::kBool, true);
  CHECK(check_value(packing, false, "f") == json(false));
  REQUIRE_THROWS_WITH(
      check_value(packing, "true", "f"),
      Contains("data.packing: expected a boolean, got a string") && Contains("without quotes"));
  REQUIRE_THROWS_WITH(check_value(packing, 1, "f"), Contains("expected a boolean"));
}

TEST_CASE("config schema: string-list keys check every element", "[config]") {
  ConfigKey modules =
      make_key("adapter.target_modules", KeyType::kStringList, json::array({"q_proj", "v_proj"}));
  modules.one_of({"q_proj", "k_proj", "v_proj"});
  CHECK(check_value(modules, json::array({"k_proj"}), "f") == json::array({"k_proj"}));
  REQUIRE_THROWS_WITH(check_value(modules, "q_proj", "f"),
                      Contains("expected an array of strings, got a string"));
  REQUIRE_THROWS_WITH(check_value(modules, json::array({"q_proj", 3}), "f"),
                      Contains("expected an array of strings, got a number (3)"));
  REQUIRE_THROWS_WITH(
      check_value(modules, json::array({"x_proj"}), "f"),
      Contains("element \"x_proj\" is not allowed") && Contains("q_proj, k_proj, v_proj"));
}

TEST_CASE("config schema: a range on a key of another type is a table bug", "[config]") {
  ConfigKey name = make_key("model.name", KeyType::kString, "");
  CHECK_THROWS_AS(name.range(0, 1), std::logic_error);
  CHECK_THROWS_AS(name.float_range(0.0, 1.0), std::logic_error);
}

TEST_CASE("config schema: edit distance and closest match", "[config]") {
  CHECK(qlt::edit_distance("", "abc") == 3);
  CHECK(qlt::edit_distance("kitten", "sitting") == 3);
  CHECK(qlt::edit_distance("Max_Seq_Len", "max_seq_len") == 0);  // case-insensitive
  const std::vector<std::string> names = {"data.max_seq_len", "data.eval", "training"};
  CHECK(qlt::closest_match("data.max_seq_length", names) == "data.max_seq_len");
  CHECK(qlt::closest_match("trainig", names) == "training");
  CHECK_FALSE(qlt::closest_match("optimizer", names).has_value());
}

TEST_CASE("config --keys: describe_config_keys lists every key with its columns", "[config]") {
  const std::string text = qlt::describe_config_keys();
  std::istringstream lines(text);
  std::string header;
  std::getline(lines, header);
  CHECK(header.rfind("KEY", 0) == 0);
  for (const auto& key : qlt::config_keys()) {
    INFO(key.path);
    std::string line;
    REQUIRE(std::getline(lines, line));  // one line per key, in table order
    CHECK(line.rfind(key.path + " ", 0) == 0);
    CHECK_THAT(line, Contains(qlt::key_type_name(key.type)) &&
                         Contains(qlt::describe_default(key)) &&
                         Contains(qlt::describe_allowed(key)) && Contains(key.meaning));
  }
  std::string extra;
  CHECK_FALSE(std::getline(lines, extra));
  CHECK_THAT(text, Contains("(required)") && Contains("float32|bfloat16") &&
                       Contains("auto|cpu|cuda|cuda:N") && Contains("2..1048576"));
}

TEST_CASE("config schema: every table key has a meaning and a path with a section", "[config]") {
  for (const auto& key : qlt::config_keys()) {
    INFO(key.path);
    CHECK_FALSE(key.meaning.empty());
    CHECK(key.path.find('.') != std::string::npos);
    // A required key's default is never used; every other default must itself be valid.
    if (!key.is_required) CHECK_NOTHROW(check_value(key, key.default_value, "default"));
  }
}
