// save_safetensors: the atomic write (temp file, fsync, rename) and the writer's own errors.
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <set>
#include <string>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/safetensors_test_util.h"

namespace {

using qlt::io::SafetensorsFile;
using qlt::io::save_safetensors;
using qlt::test::require_user_error;
using qlt::test::TempDir;

std::set<std::string> entries(const std::filesystem::path& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.insert(e.path().filename());
  return out;
}

}  // namespace

TEST_CASE("safetensors write: no temporary file is left behind", "[safetensors]") {
  TempDir dir;
  save_safetensors(dir / "a.safetensors", {{"x", at::ones({4})}});
  CHECK(entries(dir.path) == std::set<std::string>{"a.safetensors"});
}

TEST_CASE("safetensors write: saving over an existing file replaces it", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "a.safetensors";
  save_safetensors(path, {{"x", at::ones({4})}, {"old", at::zeros({2})}});
  {
    // A reader that has the old file open keeps seeing the old content (rename, not rewrite).
    const auto old_file = SafetensorsFile::open(path);
    const at::Tensor old_x = old_file.tensor("x");
    save_safetensors(path, {{"x", at::full({3}, 5.0)}}, {{"v", "2"}});
    CHECK(at::equal(old_x, at::ones({4})));
  }
  const auto file = SafetensorsFile::open(path);
  CHECK(at::equal(file.tensor("x"), at::full({3}, 5.0)));
  CHECK_FALSE(file.contains("old"));
  CHECK(file.metadata().at("v") == "2");
  CHECK(entries(dir.path) == std::set<std::string>{"a.safetensors"});
}

TEST_CASE("safetensors write: a missing target folder is a UserError naming the path",
          "[safetensors]") {
  TempDir dir;
  const auto path = dir / "no" / "such" / "a.safetensors";
  require_user_error(
      [&] {
        save_safetensors(path, {{"x", at::ones({4})}});
      },
      {path.string(), "No such file or directory", "create the folder first"});
  CHECK(entries(dir.path).empty());
}

TEST_CASE("safetensors write: a failure after writing began leaves the old file untouched",
          "[safetensors]") {
  TempDir dir;
  const auto path = dir / "a.safetensors";
  save_safetensors(path, {{"x", at::ones({4})}});
  const std::string before = qlt::test::read_bytes(path);
  SECTION("a tensor that cannot be copied to the host (meta device) throws mid-write") {
    const at::Tensor meta = at::empty({1000}, at::TensorOptions().device(at::kMeta));
    CHECK_THROWS(save_safetensors(path, {{"x", at::ones({2})}, {"meta", meta}}));
  }
  SECTION("unsupported dtype, duplicate or reserved names, bad UTF-8: refused up front") {
    require_user_error(
        [&] {
          save_safetensors(path, {{"c", at::zeros({2}, at::kComplexDouble)}});
        },
        {path.string(), "tensor 'c'", "ComplexDouble", "cannot be stored"});
    require_user_error(
        [&] {
          save_safetensors(path, {{"x", at::ones({1})}, {"x", at::ones({1})}});
        },
        {path.string(), "two tensors are named 'x'"});
    require_user_error(
        [&] {
          save_safetensors(path, {{"__metadata__", at::ones({1})}});
        },
        {path.string(), "reserved"});
    require_user_error(
        [&] {
          save_safetensors(path, {{"bad\xff", at::ones({1})}});
        },
        {path.string(), "not valid UTF-8"});
  }
  CHECK(qlt::test::read_bytes(path) == before);
  CHECK(entries(dir.path) == std::set<std::string>{"a.safetensors"});
}

TEST_CASE("safetensors write: a target that is a folder fails at the rename, cleanly",
          "[safetensors]") {
  TempDir dir;
  const auto path = dir / "taken";
  std::filesystem::create_directories(path / "inside");
  require_user_error(
      [&] {
        save_safetensors(path, {{"x", at::ones({4})}});
      },
      {path.string(), "rename failed"});
  CHECK(std::filesystem::is_directory(path / "inside"));
  CHECK(entries(dir.path) == std::set<std::string>{"taken"});
}

TEST_CASE("atomic file: nothing appears unless committed", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "f.bin";
  {
    qlt::io::AtomicFile out(path);
    out.write("abc", 3);
    CHECK(std::filesystem::exists(out.temp_path()));
    CHECK(out.temp_path().parent_path() == path.parent_path());  // same file system
    CHECK_FALSE(std::filesystem::exists(path));
  }
  CHECK(entries(dir.path).empty());
  {
    qlt::io::AtomicFile out(path);
    out.write("abc", 3);
    out.write("", 0);
    out.commit();
    CHECK_THROWS_AS(out.write("x", 1), qlt::UserError);
  }
  CHECK(qlt::test::read_bytes(path) == "abc");
  CHECK(entries(dir.path) == std::set<std::string>{"f.bin"});
}

TEST_CASE("atomic file: write_at overwrites what was written, and only that", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "f.bin";
  qlt::io::AtomicFile out(path);
  out.write("abcdef", 6);
  out.write_at(1, "XY", 2);
  out.write_at(4, "ef", 2);
  CHECK_THROWS_AS(out.write_at(5, "zz", 2), c10::Error);  // past the end: a programming error
  out.commit();
  CHECK(qlt::test::read_bytes(path) == "aXYdef");
}

TEST_CASE("safetensors stream writer: one tensor at a time, the same tensors as save_safetensors",
          "[safetensors]") {
  TempDir dir;
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"model.embed_tokens.weight", at::randn({5, 3}).to(at::kBFloat16)},
      {"w.\"quoted\"\\name", at::arange(7, at::kInt)},
      {"empty", at::zeros({0, 4})},
      {"bytes", at::arange(3, at::kByte)}};
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  const uint64_t capacity = qlt::io::safetensors_header_capacity(names, metadata);
  {
    qlt::io::SafetensorsStreamWriter w(dir / "s.safetensors", capacity, metadata);
    for (const auto& [name, t] : tensors) w.add(name, t);
    CHECK(entries(dir.path).size() == 1);  // the temporary file only
    CHECK_FALSE(std::filesystem::exists(dir / "s.safetensors"));
    w.commit();
  }
  save_safetensors(dir / "a.safetensors", tensors, metadata);
  const auto s = SafetensorsFile::open(dir / "s.safetensors");
  const auto a = SafetensorsFile::open(dir / "a.safetensors");
  CHECK(s.metadata() == a.metadata());
  for (const auto& [name, t] : tensors) {
    INFO(name);
    CHECK(s.info(name).dtype == a.info(name).dtype);
    CHECK(s.info(name).shape == a.info(name).shape);
    CHECK(at::equal(s.tensor(name), t));
  }
  // The same data buffer; only the header's padding differs.
  const std::string sb = qlt::test::read_bytes(dir / "s.safetensors");
  const std::string ab = qlt::test::read_bytes(dir / "a.safetensors");
  uint64_t sh = 0, ah = 0;
  std::memcpy(&sh, sb.data(), 8);
  std::memcpy(&ah, ab.data(), 8);
  CHECK(sh >= ah);
  CHECK(sh % 8 == 0);
  CHECK(sb.substr(8 + sh) == ab.substr(8 + ah));
  CHECK(entries(dir.path) == std::set<std::string>{"a.safetensors", "s.safetensors"});
}

TEST_CASE("safetensors stream writer: bad names, an outgrown header, no commit", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "s.safetensors";
  SECTION("a duplicate or reserved name is a UserError; nothing is left") {
    {
      qlt::io::SafetensorsStreamWriter w(path, 4096);
      w.add("x", at::ones({2}));
      require_user_error([&] { w.add("x", at::ones({2})); }, {path.string(), "'x'", "unique"});
      require_user_error([&] { w.add("__metadata__", at::ones({2})); }, {"reserved"});
    }
    CHECK(entries(dir.path).empty());
  }
  SECTION("more entries than the capacity was computed for: an internal error, nothing left") {
    {
      qlt::io::SafetensorsStreamWriter w(path, qlt::io::safetensors_header_capacity({"a"}));
      w.add("a", at::ones({2}));
      for (int k = 0; k < 8; ++k)
        w.add(fmt::format("tensor_{}_the_capacity_did_not_count", k), at::ones({2}));
      CHECK_THROWS_AS(w.commit(), c10::Error);
    }
    CHECK(entries(dir.path).empty());
  }
  SECTION("the bound holds for the longest numbers and 4 dims") {
    const std::string name = "n";
    qlt::io::SafetensorsStreamWriter w(path, qlt::io::safetensors_header_capacity({name}));
    w.add(name, at::empty({1, 1, 1, 0}));  // 4 dims; offsets are small here, the bound is not
    w.commit();
    CHECK(SafetensorsFile::open(path).info(name).shape == std::vector<int64_t>{1, 1, 1, 0});
  }
}
