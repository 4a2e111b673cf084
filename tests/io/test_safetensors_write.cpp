// save_safetensors: the atomic write (temp file, fsync, rename) and the writer's own errors.
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
