// JSON Lines reading (data/jsonl.h): the per-line size limit, folders, and that lines and
// numbers are right around the 64 KiB read blocks.
#include <catch2/catch.hpp>

#include "core/errors.h"
#include "data/jsonl.h"
#include "io/safetensors_test_util.h"

using Catch::Matchers::Contains;
using qlt::test::TempDir;
using qlt::test::write_bytes;

namespace {

std::vector<std::pair<int64_t, std::string>> read_texts(const std::filesystem::path& file) {
  std::vector<std::pair<int64_t, std::string>> out;
  qlt::data::for_each_jsonl(file, [&](const nlohmann::json& object, int64_t line) {
    out.emplace_back(line, object.at("text").get<std::string>());
  });
  return out;
}

}  // namespace

TEST_CASE("jsonl: a line over the size limit is refused naming it, before it is read whole",
          "[data][jsonl]") {
  TempDir dir;
  const std::string big(static_cast<size_t>(qlt::data::kMaxJsonlLineBytes), 'a');
  write_bytes(dir / "d.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": \"" + big + "\"}\n");
  REQUIRE_THROWS_WITH(read_texts(dir / "d.jsonl"),
                      Contains((dir / "d.jsonl").string() + ":3: the line is longer than 16 MiB") &&
                          Contains("split the example"));
}

TEST_CASE("jsonl: lines across read blocks, CRLF, no final newline, blank lines", "[data][jsonl]") {
  TempDir dir;
  const std::string long_text(70000, 'x');  // spans a 64 KiB read block
  write_bytes(dir / "d.jsonl",
              "{\"text\": \"a\"}\r\n \n{\"text\": \"" + long_text + "\"}\n{\"text\": \"b\"}");
  const auto texts = read_texts(dir / "d.jsonl");
  REQUIRE(texts.size() == 3);
  CHECK(texts[0] == std::make_pair<int64_t, std::string>(1, "a"));
  CHECK(texts[1].first == 3);
  CHECK(texts[1].second == long_text);
  CHECK(texts[2] == std::make_pair<int64_t, std::string>(4, "b"));
}

TEST_CASE("jsonl: a folder or a missing file is named", "[data][jsonl]") {
  TempDir dir;
  REQUIRE_THROWS_WITH(read_texts(dir.path), Contains("is a folder") && Contains("JSONL file"));
  REQUIRE_THROWS_WITH(read_texts(dir / "none.jsonl"), Contains("does not exist"));
}
