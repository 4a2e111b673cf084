// Tokenizer::load says what is wrong with model.path (a folder or a GGUF file) before it looks
// for the tokenizer files, and names a tokenizer.model that is a folder.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "core/errors.h"
#include "io/safetensors_test_util.h"
#include "test_paths.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::tokenizer::check_model_path;
using qlt::tokenizer::Tokenizer;

}  // namespace

TEST_CASE("model.path problems are named before tokenizer.model is looked for",
          "[tokenizer][errors]") {
  qlt::test::TempDir tmp;
  const std::string hint = "set model.path to a Hugging Face LLaMA model folder";
  SECTION("missing") {
    const fs::path missing = tmp / "nope";
    REQUIRE_THROWS_WITH(
        Tokenizer::load(missing),
        Contains("model.path " + missing.string() + " does not exist") && Contains(hint));
  }
  SECTION("a file") {
    const fs::path file = tmp / "model.safetensors";
    std::ofstream(file) << "x";
    REQUIRE_THROWS_WITH(
        Tokenizer::load(file),
        Contains("model.path " + file.string() + " is a file, not a folder") && Contains(hint));
  }
  SECTION("a GGUF file passes; a damaged one is named when it is read") {
    const fs::path file = tmp / "llama-7b.Q4_0.gguf";
    std::ofstream(file) << "GGUF";  // the magic, then nothing
    CHECK_NOTHROW(check_model_path(file));
    REQUIRE_THROWS_AS(Tokenizer::load(file), qlt::UserError);
    REQUIRE_THROWS_WITH(Tokenizer::load(file), Contains(file.string()));
  }
  SECTION("a .gguf file that is not one") {
    const fs::path file = tmp / "llama-7b.Q4_0.gguf";
    std::ofstream(file) << "<html>404 not found</html>";
    REQUIRE_THROWS_WITH(check_model_path(file), Contains("model.path " + file.string() +
                                                         " is named .gguf but is not a "
                                                         "GGUF file") &&
                                                    Contains(hint));
  }
  SECTION("a file on the way") {
    const fs::path file = tmp / "file";
    std::ofstream(file) << "x";
    REQUIRE_THROWS_WITH(Tokenizer::load(file / "model"),
                        Contains("a file on the way is not a folder") && Contains(hint));
  }
  SECTION("too long") {
    const std::string path = (tmp / std::string(300, 'm')).string();
    REQUIRE_THROWS_WITH(Tokenizer::load(path),
                        Contains("model.path is too long (" + std::to_string(path.size()) +
                                 " characters; the system allows 4096 per path and 255 per name)"));
  }
  SECTION("an existing folder passes") { CHECK_NOTHROW(check_model_path(tmp.path)); }
}

TEST_CASE("Tokenizer::load names a tokenizer.model that is a folder", "[tokenizer][errors]") {
  qlt::test::TempDir tmp;
  fs::create_directories(tmp / "tokenizer.model");
  REQUIRE_THROWS_AS(Tokenizer::load(tmp.path), qlt::UserError);
  REQUIRE_THROWS_WITH(Tokenizer::load(tmp.path),
                      Contains((tmp / "tokenizer.model").string() + ": is a folder, not a file"));
  REQUIRE_THROWS_WITH(Tokenizer::load_file(tmp / "tokenizer.model"), Contains("is a folder"));
}

TEST_CASE("the tokenizer counts the bytes it encodes", "[tokenizer]") {
  auto t = Tokenizer::load(fs::path(QLT_SOURCE_DIR) / "data/tiny-llama");
  CHECK(t.encoded_bytes() == 0);
  t.encode("In the beginning", true);
  t.encode("God", false);
  CHECK(t.encoded_bytes() == 19);
}
