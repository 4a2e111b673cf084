// trainer_state.json: written and read back; every damaged field is a UserError naming the
// file and the field (these exited 1 with a raw nlohmann message before).
#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/errors.h"
#include "io/safetensors_test_util.h"
#include "train/resume_config.h"
#include "train/trainer_state.h"

using Catch::Matchers::Contains;
using nlohmann::json;
using qlt::test::TempDir;
using qlt::test::write_bytes;

namespace {

qlt::train::TrainerState sample_state() {
  qlt::train::TrainerState s;
  s.step = 12;
  s.tokens_seen = 3456;
  s.train_seconds = 7.5;
  s.data_cursor = {1, 3, 42, 10, "0123456789abcdef"};
  s.optimizer = {{"steps_taken", 12}};
  s.config = qlt::config_to_json(qlt::TrainConfig{});
  s.config_hash = qlt::train::resume_config_hash(s.config);
  return s;
}

}  // namespace

TEST_CASE("trainer state: round trip", "[train][state]") {
  TempDir dir;
  const auto s = sample_state();
  write_bytes(dir / "trainer_state.json",
              qlt::train::trainer_state_json(s, {{"schedule", {{"next_lr", 1e-4}}}}).dump(2));
  const auto r = qlt::train::read_trainer_state(dir / "trainer_state.json");
  CHECK(r.step == 12);
  CHECK(r.tokens_seen == 3456);
  CHECK(r.train_seconds == 7.5);
  CHECK(r.data_cursor.position == 3);
  CHECK(r.data_cursor.data_hash == "0123456789abcdef");
  CHECK(r.optimizer == s.optimizer);
  CHECK(r.config == s.config);
}

TEST_CASE("trainer state: damaged fields name the file and the field", "[train][state]") {
  TempDir dir;
  const auto file = dir / "trainer_state.json";
  struct Case {
    const char* what;
    std::function<void(json&)> spoil;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"step of the wrong type", [](json& j) { j["step"] = "12"; }, {"\"step\"", "integer"}},
      {"negative step", [](json& j) { j["step"] = -3; }, {"\"step\"", "negative"}},
      {"step beyond int64",
       [](json& j) { j["step"] = 18446744073709551615ull; },
       {"\"step\"", "out of range"}},
      {"step missing", [](json& j) { j.erase("step"); }, {"\"step\"", "missing"}},
      {"train_seconds NaN-like string",
       [](json& j) { j["train_seconds"] = "nan"; },
       {"\"train_seconds\"", "number"}},
      {"negative tokens", [](json& j) { j["tokens_seen"] = -1; }, {"\"tokens_seen\""}},
      {"cursor not an object", [](json& j) { j["data_cursor"] = 5; }, {"\"data_cursor\""}},
      {"cursor negative position",
       [](json& j) { j["data_cursor"]["position"] = -1; },
       {"data_cursor", "negative"}},
      {"cursor field of the wrong type",
       [](json& j) { j["data_cursor"]["epoch"] = 1.5; },
       {"data cursor", "\"epoch\""}},
      {"optimizer not an object",
       [](json& j) { j["optimizer"] = json::array(); },
       {"\"optimizer\"", "object"}},
      {"config not an object", [](json& j) { j["config"] = "x"; }, {"\"config\"", "object"}},
      {"edited config",
       [](json& j) { j["config"]["adapter"]["rank"] = 99; },
       {"\"config_hash\"", "edited"}},
      {"another format", [](json& j) { j["format"] = "something else"; }, {"\"format\""}},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.what) {
      json j = qlt::train::trainer_state_json(sample_state(), json::object());
      c.spoil(j);
      write_bytes(file, j.dump());
      try {
        qlt::train::read_trainer_state(file);
        FAIL("no error");
      } catch (const qlt::UserError& e) {
        CHECK_THAT(e.what(), Contains(file.string()));
        for (const auto& part : c.expect) CHECK_THAT(e.what(), Contains(part));
      }
    }
  }
  SECTION("not an object") {
    write_bytes(file, "[]");
    REQUIRE_THROWS_WITH(qlt::train::read_trainer_state(file), Contains("must be a JSON object"));
  }
}
