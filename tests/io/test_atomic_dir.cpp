// AtomicDir: a folder appears complete at commit or not at all; an existing folder is refused
// or, with overwrite, replaced without leftovers.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "io/atomic_dir.h"
#include "io/safetensors_test_util.h"

namespace {

namespace fs = std::filesystem;
using qlt::io::AtomicDir;
using qlt::test::read_bytes;
using qlt::test::require_user_error;
using qlt::test::TempDir;
using qlt::test::write_bytes;

// Names directly inside `dir`.
std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& entry : fs::directory_iterator(dir)) out.insert(entry.path().filename());
  return out;
}

TEST_CASE("atomic_dir: commit puts the complete folder in place", "[atomic_dir]") {
  TempDir root;
  const fs::path target = root / "checkpoint-000010";
  {
    AtomicDir dir(target);
    CHECK(dir.path().parent_path() == root.path);
    CHECK(dir.path().filename().string().rfind("checkpoint-000010.tmp-", 0) == 0);
    CHECK(fs::is_directory(dir.path()));
    write_bytes(dir.path() / "a.bin", "alpha");
    fs::create_directories(dir.path() / "sub" / "deeper");
    write_bytes(dir.path() / "sub" / "deeper" / "b.txt", "beta");
    CHECK_FALSE(fs::exists(target));  // nothing visible before commit
    dir.commit();
    CHECK(dir.committed());
    require_user_error([&] { dir.commit(); }, {"already committed"});
  }
  CHECK(listing(root.path) == std::set<std::string>{"checkpoint-000010"});
  CHECK(read_bytes(target / "a.bin") == "alpha");
  CHECK(read_bytes(target / "sub" / "deeper" / "b.txt") == "beta");
}

TEST_CASE("atomic_dir: a trailing slash names the same folder", "[atomic_dir]") {
  TempDir root;
  AtomicDir dir(root.path / "out/");
  write_bytes(dir.path() / "x", "1");
  dir.commit();
  CHECK(read_bytes(root / "out" / "x") == "1");
}

TEST_CASE("atomic_dir: without commit nothing is left behind", "[atomic_dir]") {
  TempDir root;
  {
    AtomicDir dir(root / "final");
    write_bytes(dir.path() / "model.safetensors", "partial");
    fs::create_directories(dir.path() / "nested");
    write_bytes(dir.path() / "nested" / "f", "x");
  }
  CHECK(listing(root.path).empty());
}

TEST_CASE("atomic_dir: an existing target is refused", "[atomic_dir]") {
  TempDir root;
  const fs::path target = root / "final";
  fs::create_directories(target);
  write_bytes(target / "old.txt", "old");
  require_user_error([&] { AtomicDir dir(target); }, {target.string(), "already exists"});
  CHECK(listing(root.path) == std::set<std::string>{"final"});
  CHECK(listing(target) == std::set<std::string>{"old.txt"});

  SECTION("appearing while writing") {
    TempDir other;
    const fs::path late = other / "late";
    AtomicDir dir(late);
    write_bytes(dir.path() / "new.txt", "new");
    fs::create_directories(late);  // an empty folder a plain rename would silently replace
    require_user_error([&] { dir.commit(); }, {late.string(), "already exists"});
    CHECK(listing(other.path) == std::set<std::string>{"late"});
    CHECK(listing(late).empty());
  }
}

TEST_CASE("atomic_dir: overwrite replaces an existing folder", "[atomic_dir]") {
  TempDir root;
  const fs::path target = root / "final";
  fs::create_directories(target / "sub");
  write_bytes(target / "old.txt", "old");
  write_bytes(target / "sub" / "old2.txt", "old");
  {
    AtomicDir dir(target, /*overwrite=*/true);
    write_bytes(dir.path() / "new.txt", "new");
    CHECK(listing(target) == std::set<std::string>{"old.txt", "sub"});  // untouched until commit
    dir.commit();
  }
  CHECK(listing(root.path) == std::set<std::string>{"final"});
  CHECK(listing(target) == std::set<std::string>{"new.txt"});
  CHECK(read_bytes(target / "new.txt") == "new");

  SECTION("overwrite of a missing target just creates it") {
    AtomicDir dir(root / "fresh", true);
    write_bytes(dir.path() / "f", "1");
    dir.commit();
    CHECK(listing(root.path) == std::set<std::string>{"final", "fresh"});
  }
  SECTION("dropping an overwriting writer keeps the old folder") {
    {
      AtomicDir dir(target, true);
      write_bytes(dir.path() / "newer.txt", "newer");
    }
    CHECK(listing(root.path) == std::set<std::string>{"final"});
    CHECK(listing(target) == std::set<std::string>{"new.txt"});
  }
}

TEST_CASE("atomic_dir: a file in the way is never replaced", "[atomic_dir]") {
  TempDir root;
  write_bytes(root / "final", "a file");
  require_user_error([&] { AtomicDir dir(root / "final", true); }, {"not a folder"});
  require_user_error([&] { AtomicDir dir(root / "final"); }, {"already exists"});
  CHECK(read_bytes(root / "final") == "a file");
  CHECK(listing(root.path) == std::set<std::string>{"final"});
}

TEST_CASE("atomic_dir: a missing parent folder is reported", "[atomic_dir]") {
  TempDir root;
  require_user_error([&] { AtomicDir dir(root / "no" / "such" / "out"); },
                     {"cannot create the folder", "create the parent folder first"});
  require_user_error([&] { AtomicDir dir(fs::path("..")); }, {"give it a name"});
}

}  // namespace
