// Every config shipped under configs/ loads and validates (DESIGN.md §4).
#include <catch2/catch.hpp>
#include <filesystem>

#include "core/config.h"
#include "test_paths.h"

TEST_CASE("shipped configs: every configs/**/*.json loads", "[config]") {
  const std::filesystem::path root = std::filesystem::path(QLT_SOURCE_DIR) / "configs";
  REQUIRE(std::filesystem::is_directory(root));
  int loaded = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".json") continue;
    INFO(entry.path().string());
    CHECK_NOTHROW(qlt::load_config(entry.path()));
    ++loaded;
  }
  CHECK(loaded >= 1);  // configs/tiny/eval.json at least
}
