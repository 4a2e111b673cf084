// load_config: reading files, JSON syntax errors as file:line:column, missing files.
#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/errors.h"
#include "test_config_util.h"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using qlt::load_config;
using qlt::test::TempFile;

TEST_CASE("config file: a valid file loads", "[config]") {
  TempFile file("valid.json", R"({"model": {"path": "models/m"}, "data": {"max_seq_len": 64}})");
  const qlt::TrainConfig config = load_config(file.path());
  CHECK(config.model.path == "models/m");
  CHECK(config.data.max_seq_len == 64);
}

TEST_CASE("config file: a syntax error is reported as file:line:column", "[config]") {
  // The trailing comma on line 3 makes the '}' at line 4, column 3 unexpected.
  TempFile file("syntax.json",
                "{\n"
                "  \"model\": {\"path\": \"m\"},\n"
                "  \"data\": {\"max_seq_len\": 64,\n"
                "  }\n"
                "}\n");
  const std::string where = file.path().string() + ":4:3: not valid JSON: ";
  REQUIRE_THROWS_WITH(load_config(file.path()), StartsWith(where) && Contains("unexpected '}'") &&
                                                    !Contains("[json.exception"));
}

TEST_CASE("config file: syntax error positions at line ends and the end of input", "[config]") {
  // An unterminated literal is noticed at the newline that ends line 2 (column 9).
  TempFile literal("literal.json", "{\n\"a\": tru\n}");
  REQUIRE_THROWS_WITH(load_config(literal.path()),
                      StartsWith(literal.path().string() + ":2:9: not valid JSON: "));
  // A missing closing brace is noticed just past the last character.
  TempFile truncated("truncated.json", R"({"model": {"path": "m"})");
  REQUIRE_THROWS_WITH(load_config(truncated.path()),
                      StartsWith(truncated.path().string() + ":1:24: not valid JSON: ") &&
                          Contains("unexpected end of input"));
  TempFile empty("empty.json", "");
  REQUIRE_THROWS_WITH(load_config(empty.path()),
                      StartsWith(empty.path().string() + ":1:1: not valid JSON: "));
}

TEST_CASE("config file: a missing file is one line naming the path", "[config]") {
  const std::string path = "/nonexistent/dir/qlt_config.json";
  REQUIRE_THROWS_WITH(load_config(path),
                      Contains(path + " does not exist") && Contains("--config"));
  CHECK_THROWS_AS(load_config(path), qlt::UserError);
  try {
    load_config(path);
  } catch (const qlt::UserError& error) {
    CHECK(std::string(error.what()).find('\n') == std::string::npos);
  }
}

TEST_CASE("config file: a directory is not a config file", "[config]") {
  REQUIRE_THROWS_WITH(load_config(std::filesystem::temp_directory_path()),
                      Contains("is a directory"));
}

TEST_CASE("config file: value errors name the file", "[config]") {
  TempFile file("bad_value.json", R"({"model": {"path": "m"}, "data": {"max_seq_len": 1}})");
  REQUIRE_THROWS_WITH(load_config(file.path()),
                      StartsWith(file.path().string() + ": data.max_seq_len: 1 is out of range"));
}
