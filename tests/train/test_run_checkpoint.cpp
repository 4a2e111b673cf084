// Run checkpoint folders: naming, atomic write with manifest and DONE, the reasons a folder is
// not resumable, newest-complete lookup, pruning, and stale temporary folders.
#include <c10/util/hash.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors_test_util.h"
#include "train/run_checkpoint.h"

namespace {

namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using qlt::test::read_bytes;
using qlt::test::TempDir;
using qlt::test::write_bytes;
using qlt::train::checkpoint_path;
using qlt::train::checkpoint_problem;
using qlt::train::checkpoint_step;
using qlt::train::file_sha1;
using qlt::train::kDoneFile;
using qlt::train::kManifestFile;
using qlt::train::list_checkpoints;
using qlt::train::newest_complete_checkpoint;
using qlt::train::prune_checkpoints;
using qlt::train::remove_stale_temp_checkpoints;
using qlt::train::write_checkpoint_folder;

// A complete checkpoint of `step` holding a.txt and sub/b.bin.
fs::path make_checkpoint(const fs::path& run, int64_t step) {
  const fs::path dir = checkpoint_path(run, step);
  write_checkpoint_folder(dir, [&](const fs::path& tmp) {
    write_bytes(tmp / "a.txt", "step " + std::to_string(step));
    fs::create_directory(tmp / "sub");
    write_bytes(tmp / "sub" / "b.bin", std::string(1000, static_cast<char>(step)));
  });
  return dir;
}

}  // namespace

TEST_CASE("checkpoint folder names", "[train][checkpoint]") {
  CHECK(checkpoint_path("runs/x", 7) == fs::path("runs/x/checkpoint-000007"));
  CHECK(checkpoint_path("r", 1234567) == fs::path("r/checkpoint-1234567"));
  CHECK(checkpoint_step("runs/x/checkpoint-000123") == 123);
  CHECK(checkpoint_step("checkpoint-1234567") == 1234567);
  CHECK_FALSE(checkpoint_step("checkpoint-000123.tmp-42"));
  CHECK_FALSE(checkpoint_step("checkpoint-12"));
  CHECK_FALSE(checkpoint_step("final"));
  CHECK_FALSE(checkpoint_step("checkpoint-00001x"));
}

TEST_CASE("a written checkpoint is complete, with a manifest of every file",
          "[train][checkpoint]") {
  TempDir run;
  const fs::path dir = make_checkpoint(run.path, 5);
  CHECK(fs::exists(dir / kDoneFile));
  CHECK(checkpoint_problem(dir).empty());
  const auto manifest = nlohmann::json::parse(read_bytes(dir / kManifestFile));
  CHECK(manifest["files"].size() == 2);
  CHECK(manifest["files"]["sub/b.bin"]["bytes"] == 1000);
  CHECK(manifest["files"]["a.txt"]["sha1"] == file_sha1(dir / "a.txt"));
  // Nothing but the final folder is left in the run directory.
  CHECK(std::distance(fs::directory_iterator(run.path), fs::directory_iterator()) == 1);
}

TEST_CASE("file_sha1 streams the file and gives the SHA-1 of its bytes", "[train][checkpoint]") {
  TempDir dir;
  // FIPS 180-1's test vectors.
  write_bytes(dir.path / "abc", "abc");
  CHECK(file_sha1(dir.path / "abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  write_bytes(dir.path / "empty", "");
  CHECK(file_sha1(dir.path / "empty") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  // Across the 1 MiB chunks: sizes on, before and after chunk edges, against LibTorch's
  // independent SHA-1 of the whole string.
  for (const size_t bytes : {size_t{1} << 20, (size_t{1} << 20) - 1, (size_t{3} << 20) + 7}) {
    std::string data(bytes, '\0');
    for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<char>((i * 2654435761u) >> 13);
    write_bytes(dir.path / "big", data);
    INFO(bytes << " bytes");
    CHECK(file_sha1(dir.path / "big") == c10::sha1(data).str());
  }
  CHECK_THROWS_WITH(file_sha1(dir.path / "missing"),
                    Contains("missing") && Contains("cannot read"));
}

TEST_CASE("a failing write leaves no folder and keeps the old one", "[train][checkpoint]") {
  TempDir run;
  const fs::path dir = make_checkpoint(run.path, 5);
  CHECK_THROWS(write_checkpoint_folder(dir, [](const fs::path& tmp) {
    write_bytes(tmp / "a.txt", "half");
    throw std::runtime_error("disk full");
  }));
  CHECK(checkpoint_problem(dir).empty());
  CHECK(read_bytes(dir / "a.txt") == "step 5");
  CHECK(std::distance(fs::directory_iterator(run.path), fs::directory_iterator()) == 1);
}

TEST_CASE("checkpoint_problem names why a folder cannot be resumed", "[train][checkpoint]") {
  TempDir run;
  const fs::path dir = make_checkpoint(run.path, 3);
  SECTION("no DONE") {
    fs::remove(dir / kDoneFile);
    CHECK_THAT(checkpoint_problem(dir), Contains("no DONE marker"));
  }
  SECTION("a changed byte") {
    std::string bytes = read_bytes(dir / "sub" / "b.bin");
    bytes[10] ^= 1;
    write_bytes(dir / "sub" / "b.bin", bytes);
    CHECK_THAT(checkpoint_problem(dir), Contains("sub/b.bin") && Contains("SHA-1"));
  }
  SECTION("a truncated file") {
    write_bytes(dir / "a.txt", "st");
    CHECK_THAT(checkpoint_problem(dir), Contains("a.txt has 2 bytes"));
  }
  SECTION("a missing file") {
    fs::remove(dir / "a.txt");
    CHECK_THAT(checkpoint_problem(dir), Contains("a.txt") && Contains("missing"));
  }
  SECTION("an extra file") {
    write_bytes(dir / "stray.bin", "x");
    CHECK_THAT(checkpoint_problem(dir), Contains("stray.bin is not in the manifest"));
  }
  SECTION("a broken manifest") {
    write_bytes(dir / kManifestFile, "{\"files\": ");
    CHECK_THAT(checkpoint_problem(dir), Contains("manifest.json is not valid JSON"));
  }
  SECTION("not a folder") {
    CHECK_THAT(checkpoint_problem(run / "nothing"), Contains("not a folder"));
  }
}

TEST_CASE("newest_complete_checkpoint skips incomplete and corrupted ones", "[train][checkpoint]") {
  TempDir run;
  CHECK_FALSE(newest_complete_checkpoint(run.path));
  make_checkpoint(run.path, 2);
  const fs::path good = make_checkpoint(run.path, 10);
  const fs::path corrupted = make_checkpoint(run.path, 20);
  const fs::path incomplete = make_checkpoint(run.path, 30);
  write_bytes(corrupted / "a.txt", "step 21");
  fs::remove(incomplete / kDoneFile);
  fs::create_directory(run / "checkpoint-000040.tmp-1");  // an interrupted write: not listed
  REQUIRE(list_checkpoints(run.path).size() == 4);
  CHECK(list_checkpoints(run.path).front() == incomplete);
  CHECK(newest_complete_checkpoint(run.path) == good);
}

TEST_CASE("prune_checkpoints keeps the newest complete ones", "[train][checkpoint]") {
  TempDir run;
  for (int64_t step : {1, 2, 3, 4}) make_checkpoint(run.path, step);
  fs::remove(checkpoint_path(run.path, 4) / kDoneFile);  // newest is incomplete: not counted
  prune_checkpoints(run.path, 2);
  CHECK(fs::exists(checkpoint_path(run.path, 4)));
  CHECK(fs::exists(checkpoint_path(run.path, 3)));
  CHECK(fs::exists(checkpoint_path(run.path, 2)));
  CHECK_FALSE(fs::exists(checkpoint_path(run.path, 1)));
  prune_checkpoints(run.path, 0);  // 0 keeps everything
  CHECK(list_checkpoints(run.path).size() == 3);
}

TEST_CASE("temporary folders and files of other processes are removed (run lock held)",
          "[train][checkpoint]") {
  TempDir run;
  const fs::path dead = run / "checkpoint-000005.tmp-4194305";
  const fs::path huge_pid = run / "checkpoint-000007.tmp-99999999999999999999999";
  const fs::path final_tmp = run / "final.tmp-4194305-2";
  const fs::path ours = run / ("checkpoint-000006.tmp-" + std::to_string(::getpid()));
  const fs::path other = run / "notes.tmp-4194305";
  for (const auto& d : {dead, huge_pid, final_tmp, ours, other}) fs::create_directory(d);
  write_bytes(run / ".metrics.jsonl.tmp-4194305-77", "x");
  CHECK(remove_stale_temp_checkpoints(run.path) == 4);
  CHECK_FALSE(fs::exists(dead));
  CHECK_FALSE(fs::exists(huge_pid));
  CHECK_FALSE(fs::exists(final_tmp));
  CHECK_FALSE(fs::exists(run / ".metrics.jsonl.tmp-4194305-77"));
  CHECK(fs::exists(ours));
  CHECK(fs::exists(other));
}
