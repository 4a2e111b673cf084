// The one JSON reader (core/json_reader.h): nesting limit, duplicate keys, positions and
// hints; and, table-driven, that every reader of outside JSON in the program goes through it
// (a 10^5-level document and a repeated key are refused with a UserError naming the file).
#include <catch2/catch.hpp>
#include <fstream>

#include "core/config.h"
#include "core/errors.h"
#include "core/json_reader.h"
#include "data/jsonl.h"
#include "export/peft_adapter.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "model/llama_config.h"
#include "test_common.h"
#include "test_paths.h"
#include "train/run_checkpoint.h"
#include "train/trainer_state.h"

using Catch::Matchers::Contains;
using qlt::JsonError;
using qlt::test::kRoot;
using qlt::test::TempDir;
using qlt::test::write_bytes;
namespace fs = std::filesystem;

namespace {

std::string nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string parse_error(std::string_view text) {
  nlohmann::json out;
  JsonError error;
  REQUIRE_FALSE(qlt::try_parse_json(text, out, error));
  return error.message;
}

}  // namespace

TEST_CASE("json reader: nesting up to the limit is read, deeper is refused with a position",
          "[json]") {
  nlohmann::json out;
  JsonError error;
  CHECK(qlt::try_parse_json(nested(qlt::kMaxJsonDepth), out, error));
  CHECK_FALSE(qlt::try_parse_json(nested(qlt::kMaxJsonDepth + 1), out, error));
  CHECK_THAT(error.message, Contains("nested deeper than 64 levels"));
  CHECK(error.line == 1);
  CHECK(error.column == 65);  // the bracket that opens level 65
  // Objects count too, and strings holding brackets do not.
  // {"a":"[[[[","b":[[[... : the object is level 1, the 64th '[' opens level 65.
  const std::string objects =
      "{\"a\":\"[[[[\",\"b\":" + std::string(70, '[') + std::string(70, ']') + "}";
  CHECK_FALSE(qlt::try_parse_json(objects, out, error));
  CHECK_THAT(error.message, Contains("nested deeper"));
  CHECK(error.column == 16 + 64);
  // 10^5 levels: refused, no stack overflow (this crashed the config reader before).
  CHECK_THAT(parse_error(nested(100000)), Contains("nested deeper"));
  std::string objects_deep;
  for (int i = 0; i < 100000; ++i) objects_deep += "{\"a\":";
  CHECK_THAT(parse_error(objects_deep), Contains("nested deeper"));
}

TEST_CASE("json reader: a key twice in one object is refused, naming key and object", "[json]") {
  CHECK_THAT(parse_error(R"({"lr": 1, "lr": 2})"),
             Contains("key \"lr\" appears twice in the top-level object"));
  CHECK_THAT(parse_error(R"({"optimizer": {"lr": 1, "beta1": 0.9, "lr": 2}})"),
             Contains("key \"lr\" appears twice in the object at /optimizer"));
  CHECK_THAT(parse_error(R"({"messages": [{"role": "a"}, {"role": "b", "role": "c"}]})"),
             Contains("the object at /messages/1"));
  // The same key in sibling objects is fine.
  nlohmann::json out;
  JsonError error;
  CHECK(qlt::try_parse_json(R"({"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 1}, {"x": 2}]})", out,
                            error));
  CHECK(out["c"][1]["x"] == 2);
}

TEST_CASE("json reader: syntax errors carry line, column and advice", "[json]") {
  nlohmann::json out;
  JsonError error;
  CHECK_FALSE(qlt::try_parse_json("{\n  \"a\": 1,\n}", out, error));
  CHECK(error.line == 3);
  CHECK(error.column == 1);
  CHECK_THAT(error.message, !Contains("[json.exception"));
  CHECK_THAT(parse_error("{\"a\": \"\xff\"}"), Contains("UTF-8") && Contains("iconv"));
  CHECK_THAT(parse_error(std::string("{\"a\": \"x\0y\"}", 12)),
             Contains("control character") && Contains("\\u0000"));
  REQUIRE_THROWS_WITH(qlt::parse_json("[1,", "the origin"),
                      Contains("the origin:1:4: not valid JSON: "));
  REQUIRE_THROWS_AS(qlt::parse_json("{\"a\":1,\"a\":2}", "x"), qlt::UserError);
}

// Found by the fuzzers (tests/fuzz/regressions/*/json-number-overflow): nlohmann throws
// out_of_range, not parse_error, for a number beyond a double; it escaped every reader (exit 1,
// and checkpoint_problem threw).
TEST_CASE("json reader: a number beyond a double is a parse error with its position", "[json]") {
  nlohmann::json out;
  JsonError error;
  CHECK_FALSE(qlt::try_parse_json("{\n  \"lr\": 1e309}", out, error));
  CHECK_THAT(error.message, Contains("number overflow") && Contains("1e309"));
  CHECK(error.line == 2);
  CHECK(error.column == 9);
  REQUIRE_THROWS_AS(qlt::parse_json("[-2e308]", "x"), qlt::UserError);
  TempDir dir;
  std::filesystem::create_directories(dir / "ckpt");
  write_bytes(dir / "ckpt/DONE", "");
  write_bytes(dir / "ckpt/manifest.json", "2e308");
  CHECK_THAT(qlt::train::checkpoint_problem(dir / "ckpt"), Contains("number overflow"));
}

TEST_CASE("json reader: files that are missing, folders or unreadable", "[json]") {
  TempDir dir;
  REQUIRE_THROWS_WITH(qlt::read_json_file(dir / "none.json", "; hint"),
                      Contains("none.json does not exist; hint"));
  REQUIRE_THROWS_WITH(qlt::read_json_file(dir.path), Contains("is a directory, not a file"));
  const std::string long_name(100000, 'x');
  REQUIRE_THROWS_AS(qlt::read_json_file(dir / long_name), qlt::UserError);
}

// Every reader of outside JSON, fed a document nested 10^5 deep and one with a repeated key:
// each is a UserError that names the file (or tensor / argument) and the problem.
TEST_CASE("every JSON reader refuses deep nesting and repeated keys", "[json]") {
  TempDir dir;
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {{nested(100000), "nested deeper than 64"},
                                   {R"({"k": 1, "k": 2})", "\"k\" appears twice"}};
  for (const auto& c : cases) {
    DYNAMIC_SECTION("config file: " << c.expect) {
      write_bytes(dir / "config.json", c.text);
      REQUIRE_THROWS_WITH(qlt::load_config(dir / "config.json"),
                          Contains((dir / "config.json").string()) && Contains(c.expect));
    }
    DYNAMIC_SECTION("--set value: " << c.expect) {
      write_bytes(dir / "config.json", R"({"model": {"path": "m"}})");
      REQUIRE_THROWS_WITH(
          qlt::load_config(dir / "config.json", {"adapter.target_modules=" + c.text}),
          Contains("--set adapter.target_modules") && Contains(c.expect));
    }
    DYNAMIC_SECTION("JSONL line: " << c.expect) {
      write_bytes(dir / "data.jsonl", "{\"text\": \"a\"}\n" + c.text + "\n");
      REQUIRE_THROWS_WITH(
          qlt::data::for_each_jsonl(dir / "data.jsonl", [](const nlohmann::json&, int64_t) {}),
          Contains((dir / "data.jsonl").string() + ":2: not valid JSON") && Contains(c.expect));
    }
    DYNAMIC_SECTION("safetensors header: " << c.expect) {
      write_bytes(dir / "x.safetensors", qlt::test::st_bytes(c.text));
      REQUIRE_THROWS_WITH(qlt::io::SafetensorsFile::open(dir / "x.safetensors"),
                          Contains("x.safetensors") && Contains(c.expect));
    }
    DYNAMIC_SECTION("sharded index: " << c.expect) {
      write_bytes(dir / "model.safetensors.index.json", c.text);
      REQUIRE_THROWS_WITH(qlt::io::SafetensorsCheckpoint::open(dir.path),
                          Contains("model.safetensors.index.json") && Contains(c.expect));
    }
    DYNAMIC_SECTION("model config.json: " << c.expect) {
      write_bytes(dir / "config.json", c.text);
      REQUIRE_THROWS_WITH(qlt::model::read_llama_config(dir.path),
                          Contains("config.json") && Contains(c.expect));
    }
    DYNAMIC_SECTION("PEFT adapter_config.json: " << c.expect) {
      fs::copy(kRoot / "tests/fixtures/lora_llama_gqa/adapter", dir / "adapter");
      write_bytes(dir / "adapter/adapter_config.json", c.text);
      REQUIRE_THROWS_WITH(qlt::exporter::read_peft_adapter(dir / "adapter"),
                          Contains("adapter_config.json") && Contains(c.expect));
    }
    DYNAMIC_SECTION("trainer_state.json: " << c.expect) {
      write_bytes(dir / "trainer_state.json", c.text);
      REQUIRE_THROWS_WITH(qlt::train::read_trainer_state(dir / "trainer_state.json"),
                          Contains("trainer_state.json") && Contains(c.expect));
    }
    DYNAMIC_SECTION("checkpoint manifest.json: " << c.expect) {
      fs::create_directories(dir / "checkpoint-000001");
      write_bytes(dir / "checkpoint-000001/DONE", "");
      write_bytes(dir / "checkpoint-000001/manifest.json", c.text);
      CHECK_THAT(qlt::train::checkpoint_problem(dir / "checkpoint-000001"),
                 Contains("manifest.json") && Contains(c.expect));
    }
  }
}
