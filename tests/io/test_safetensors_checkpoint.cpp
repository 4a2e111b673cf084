// SafetensorsCheckpoint: a Hugging Face model directory, single-file or sharded with
// model.safetensors.index.json (written by hand here, as transformers writes it).
#include <string>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"

namespace {

using qlt::io::SafetensorsCheckpoint;
using qlt::io::save_safetensors;
using qlt::test::require_user_error;
using qlt::test::TempDir;

const char* kShard1 = "model-00001-of-00002.safetensors";
const char* kShard2 = "model-00002-of-00002.safetensors";

const at::Tensor kA = at::arange(6, at::kFloat).reshape({2, 3});
const at::Tensor kB = at::ones({4}, at::kBFloat16);
const at::Tensor kC = at::arange(5, at::kLong);

// Two shards: {a, b} and {c}, plus the index `index_json` (default: the correct one).
void write_sharded(const TempDir& dir, const std::string& index_json = "") {
  save_safetensors(dir / kShard1, {{"a", kA}, {"b", kB}});
  save_safetensors(dir / kShard2, {{"c", kC}});
  const std::string index =
      index_json.empty()
          ? std::string(R"({"metadata": {"total_size": 72}, "weight_map": {)") + R"("a": ")" +
                kShard1 + R"(", "b": ")" + kShard1 + R"(", "c": ")" + kShard2 + R"("}})"
          : index_json;
  qlt::test::write_bytes(dir / "model.safetensors.index.json", index);
}

}  // namespace

TEST_CASE("checkpoint: sharded form reads tensors from both shards", "[safetensors]") {
  TempDir dir;
  write_sharded(dir);
  const auto ckpt = SafetensorsCheckpoint::open(dir.path);
  CHECK(ckpt.names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(ckpt.contains("c"));
  CHECK_FALSE(ckpt.contains("d"));
  CHECK(ckpt.file_of("a") == dir / kShard1);
  CHECK(ckpt.file_of("c") == dir / kShard2);
  CHECK(at::equal(ckpt.tensor("a"), kA));
  CHECK(at::equal(ckpt.tensor("b"), kB));
  CHECK(at::equal(ckpt.tensor("c"), kC));
  CHECK(ckpt.info("c").dtype == "I64");
  CHECK(ckpt.info("a").shape == std::vector<int64_t>{2, 3});
  require_user_error([&] { ckpt.tensor("d"); },
                     {"tensor 'd' is not in the checkpoint", dir.path.string()});
}

TEST_CASE("checkpoint: single-file form", "[safetensors]") {
  TempDir dir;
  save_safetensors(dir / "model.safetensors", {{"b", kB}, {"a", kA}});
  const auto ckpt = SafetensorsCheckpoint::open(dir.path);
  CHECK(ckpt.names() == std::vector<std::string>{"a", "b"});  // sorted
  CHECK(at::equal(ckpt.tensor("a"), kA));
  CHECK(ckpt.file_of("b") == dir / "model.safetensors");
}

TEST_CASE("checkpoint: the index names a shard file that is missing", "[safetensors]") {
  TempDir dir;
  write_sharded(dir);
  std::filesystem::remove(dir / kShard2);
  require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                     {"model.safetensors.index.json", "tensor 'c'", kShard2, "does not exist",
                      "download the missing shard"});
}

TEST_CASE("checkpoint: a malformed index", "[safetensors]") {
  TempDir dir;
  SECTION("weight_map is not an object") {
    write_sharded(dir, R"({"weight_map": ["a", "b"]})");
    require_user_error(
        [&] { SafetensorsCheckpoint::open(dir.path); },
        {"model.safetensors.index.json", "\"weight_map\" must be an object", "array"});
  }
  SECTION("weight_map is missing") {
    write_sharded(dir, R"({"metadata": {}})");
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {"model.safetensors.index.json", "\"weight_map\""});
  }
  SECTION("not JSON") {
    write_sharded(dir, "{\"weight_map\": {");
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {"model.safetensors.index.json", "not valid JSON"});
  }
  SECTION("a shard that is not a string") {
    write_sharded(dir, R"({"weight_map": {"a": 1}})");
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {"weight_map[\"a\"] must be a file name inside the folder"});
  }
  SECTION("a shard outside the folder") {
    write_sharded(dir, R"({"weight_map": {"a": "../model.safetensors"}})");
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {"weight_map[\"a\"] must be a file name inside the folder"});
  }
}

TEST_CASE("checkpoint: a tensor listed in the index but absent from its shard", "[safetensors]") {
  TempDir dir;
  // "c" is said to live in shard 1, which only holds a and b.
  write_sharded(dir, std::string(R"({"weight_map": {"a": ")") + kShard1 + R"(", "c": ")" + kShard1 +
                         R"("}})");
  const auto ckpt = SafetensorsCheckpoint::open(dir.path);  // shards open lazily
  CHECK(at::equal(ckpt.tensor("a"), kA));
  require_user_error([&] { ckpt.tensor("c"); },
                     {"tensor 'c'", kShard1, "has no such tensor", "re-download"});
  require_user_error([&] { ckpt.info("c"); }, {"tensor 'c'", "has no such tensor"});
}

TEST_CASE("checkpoint: a corrupt shard is reported when opened", "[safetensors]") {
  TempDir dir;
  write_sharded(dir);
  qlt::test::write_bytes(dir / kShard2, "abc");
  const auto ckpt = SafetensorsCheckpoint::open(dir.path);
  CHECK(at::equal(ckpt.tensor("a"), kA));
  require_user_error([&] { ckpt.tensor("c"); }, {kShard2, "truncated"});
}

TEST_CASE("checkpoint: neither model.safetensors nor an index", "[safetensors]") {
  TempDir dir;
  SECTION("empty folder") {
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {dir.path.string(),
                        "neither model.safetensors nor "
                        "model.safetensors.index.json"});
  }
  SECTION("a PyTorch .bin checkpoint") {
    qlt::test::write_bytes(dir / "pytorch_model.bin", "x");
    require_user_error([&] { SafetensorsCheckpoint::open(dir.path); },
                       {"PyTorch .bin", "convert it to safetensors"});
  }
  SECTION("no such folder") {
    require_user_error([&] { SafetensorsCheckpoint::open(dir / "nope"); },
                       {(dir / "nope").string(), "does not exist"});
  }
}
