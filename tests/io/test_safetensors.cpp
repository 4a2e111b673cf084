// safetensors reader + writer: round trips for every dtype, zero-copy mapping, copy-on-write,
// alignment fallback, zero-size and empty files, and a file written by Python.
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "test_paths.h"

namespace {

using qlt::io::safetensors_dtype;
using qlt::io::SafetensorsFile;
using qlt::io::save_safetensors;
using qlt::io::scalar_type_of;
using qlt::test::same_tensor;
using qlt::test::TempDir;

const std::vector<std::string> kAllDtypes = {"BOOL", "U8",  "I8",      "U16",     "I16",    "U32",
                                             "I32",  "U64", "I64",     "F16",     "BF16",   "F32",
                                             "F64",  "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0"};

// [3, 5] of `type` with random bytes (NaN patterns included: compared bytewise); BOOL gets 0/1.
at::Tensor random_tensor(at::ScalarType type) {
  if (type == at::kBool) return at::randint(0, 2, {3, 5}, at::kByte).view(at::kBool);
  const int64_t item = static_cast<int64_t>(c10::elementSize(type));
  return at::randint(0, 256, {3, 5 * item}, at::kByte).view(type);
}

// The [start, end) address range and permissions of the mapping of `path` holding `address`,
// from /proc/self/maps; found = false when no mapping of that file holds it.
struct MapLine {
  bool found = false;
  std::string perms;
};
MapLine mapping_of(const std::filesystem::path& path, const void* address) {
  const std::string want = std::filesystem::canonical(path).string();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream in(line);
    std::string range, perms, offset, dev, inode, file;
    in >> range >> perms >> offset >> dev >> inode;
    std::getline(in >> std::ws, file);
    if (file != want) continue;
    const auto dash = range.find('-');
    const uintptr_t start = std::stoull(range.substr(0, dash), nullptr, 16);
    const uintptr_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
    const auto a = reinterpret_cast<uintptr_t>(address);
    if (a >= start && a < end) return {true, perms};
  }
  return {};
}

bool any_mapping_of(const std::filesystem::path& path) {
  const std::string want = std::filesystem::canonical(path).string();
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.size() >= want.size() &&
        line.compare(line.size() - want.size(), want.size(), want) == 0)
      return true;
  }
  return false;
}

}  // namespace

TEST_CASE("safetensors: dtype names map both ways", "[safetensors]") {
  for (const auto& name : kAllDtypes) {
    INFO(name);
    CHECK(safetensors_dtype(scalar_type_of(name)) == name);
  }
  CHECK(scalar_type_of("BF16") == at::kBFloat16);
  CHECK(scalar_type_of("F8_E4M3") == at::ScalarType::Float8_e4m3fn);
  CHECK_THROWS_AS(scalar_type_of("F4"), qlt::UserError);
  CHECK_THROWS_AS(safetensors_dtype(at::kComplexDouble), qlt::UserError);
}

TEST_CASE("safetensors: round trip of every supported dtype", "[safetensors]") {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : kAllDtypes)
    tensors.emplace_back("t_" + name, random_tensor(scalar_type_of(name)));
  // Real values too, checked with LibTorch's own comparison.
  tensors.emplace_back("bf16_values", at::randn({4, 7}).to(at::kBFloat16));
  tensors.emplace_back("f32_values", at::arange(12, at::kFloat).reshape({3, 4}));
  tensors.emplace_back("i64_values", at::arange(-5, 5, at::kLong));
  tensors.emplace_back("scalar", at::scalar_tensor(3.5, at::kFloat));  // shape []
  const auto path = dir / "all.safetensors";
  save_safetensors(path, tensors, {{"format", "pt"}});

  const auto file = SafetensorsFile::open(path);
  REQUIRE(file.tensors().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    INFO(name);
    CHECK(file.tensors()[i].name == name);  // data-buffer order == the order given to save
    CHECK(file.info(name).dtype == safetensors_dtype(expected.scalar_type()));
    const at::Tensor got = file.tensor(name);
    CHECK(got.device() == at::kCPU);
    CHECK(same_tensor(got, expected));
  }
  CHECK(at::equal(file.tensor("bf16_values"), tensors[kAllDtypes.size()].second));
  CHECK(file.tensor("scalar").dim() == 0);
  CHECK(file.tensor("scalar").item<float>() == 3.5f);
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
}

TEST_CASE("safetensors: non-contiguous and lazily-conjugated inputs are written as values",
          "[safetensors]") {
  TempDir dir;
  const at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  const at::Tensor transposed = base.t();                              // strides [1, 6]
  const at::Tensor strided = base.slice(1, 1, at::nullopt, 2);         // [4, 3], offset 1
  const at::Tensor expanded = at::arange(3, at::kInt).expand({5, 3});  // stride 0
  const at::Tensor complex = at::randn({2, 3}, at::kComplexFloat);
  const at::Tensor conj = complex.conj();  // a view with the conjugate bit set
  REQUIRE_FALSE(transposed.is_contiguous());
  save_safetensors(
      dir / "v.safetensors",
      {{"transposed", transposed}, {"strided", strided}, {"expanded", expanded}, {"conj", conj}});
  const auto file = SafetensorsFile::open(dir / "v.safetensors");
  CHECK(at::equal(file.tensor("transposed"), transposed));
  CHECK(file.tensor("transposed").sizes() == at::IntArrayRef{6, 4});
  CHECK(at::equal(file.tensor("strided"), strided));
  CHECK(at::equal(file.tensor("expanded"), expanded));
  CHECK(at::equal(file.tensor("conj"), conj.resolve_conj()));
}

TEST_CASE("safetensors: zero-size tensors", "[safetensors]") {
  TempDir dir;
  const at::Tensor a = at::arange(4, at::kFloat);
  save_safetensors(dir / "z.safetensors", {{"a", a},
                                           {"empty", at::empty({0, 3}, at::kFloat)},
                                           {"empty_bf16", at::empty({5, 0}, at::kBFloat16)},
                                           {"b", a * 2}});
  const auto file = SafetensorsFile::open(dir / "z.safetensors");
  const at::Tensor empty = file.tensor("empty");
  CHECK(empty.sizes() == at::IntArrayRef{0, 3});
  CHECK(empty.scalar_type() == at::kFloat);
  CHECK(file.tensor("empty_bf16").sizes() == at::IntArrayRef{5, 0});
  CHECK(file.info("empty").begin == file.info("empty").end);
  CHECK(at::equal(file.tensor("b"), a * 2));
}

TEST_CASE("safetensors: files without tensors", "[safetensors]") {
  TempDir dir;
  SECTION("hand-made header {}") {
    qlt::test::write_bytes(dir / "e.safetensors", qlt::test::st_bytes("{}"));
  }
  SECTION("written by save_safetensors") { save_safetensors(dir / "e.safetensors", {}); }
  const auto file = SafetensorsFile::open(dir / "e.safetensors");
  CHECK(file.tensors().empty());
  CHECK(file.metadata().empty());
  CHECK_FALSE(file.contains("x"));
}

TEST_CASE("safetensors: metadata round trip", "[safetensors]") {
  TempDir dir;
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"note", "π ≈ 3.14, \"quoted\"\nnew line"}, {"empty", ""}};
  save_safetensors(dir / "m.safetensors", {}, metadata);
  CHECK(SafetensorsFile::open(dir / "m.safetensors").metadata() == metadata);
  // null metadata, as the reference accepts
  qlt::test::write_bytes(dir / "n.safetensors", qlt::test::st_bytes(R"({"__metadata__":null})"));
  CHECK(SafetensorsFile::open(dir / "n.safetensors").metadata().empty());
}

TEST_CASE("safetensors: the header is padded so data starts 8-byte aligned", "[safetensors]") {
  TempDir dir;
  save_safetensors(dir / "p.safetensors", {{"x", at::ones({3}, at::kDouble)}});
  const std::string bytes = qlt::test::read_bytes(dir / "p.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK((8 + n) % 8 == 0);
  CHECK(bytes.size() == 8 + n + 24);
}

TEST_CASE("safetensors: tensors share the file's private mapping (zero copy)", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "zc.safetensors";
  save_safetensors(path, {{"a", at::arange(16, at::kFloat)}, {"b", at::ones({8}, at::kBFloat16)}});
  {
    at::Tensor a, b;
    {
      const auto file = SafetensorsFile::open(path);
      a = file.tensor("a");
      b = file.tensor("b");
      // Both point into one buffer at their offsets' distance...
      const auto* pa = static_cast<const uint8_t*>(a.data_ptr());
      const auto* pb = static_cast<const uint8_t*>(b.data_ptr());
      CHECK(pb - pa == static_cast<ptrdiff_t>(file.info("b").begin - file.info("a").begin));
      CHECK(file.tensor("a").data_ptr() == a.data_ptr());  // a second read copies nothing
    }
    // ...which is a private (copy-on-write) writable mapping of the file itself, and stays
    // alive after the SafetensorsFile is gone because the tensors hold it.
    const MapLine line = mapping_of(path, a.data_ptr());
    CHECK(line.found);
    CHECK(line.perms == "rw-p");
    CHECK(at::equal(a, at::arange(16, at::kFloat)));
  }
  CHECK_FALSE(any_mapping_of(path));  // the last tensor released the mapping
}

TEST_CASE("safetensors: writing to a returned tensor never changes the file", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "cow.safetensors";
  const at::Tensor original = at::arange(1024, at::kFloat);
  save_safetensors(path, {{"w", original}});
  const std::string before = qlt::test::read_bytes(path);
  {
    const auto file = SafetensorsFile::open(path);
    at::Tensor w = file.tensor("w");
    REQUIRE(mapping_of(path, w.data_ptr()).found);  // really the mapping, not a copy
    w.fill_(42.0f);
    w.mul_(2);
    CHECK(w[7].item<float>() == 84.0f);
  }
  CHECK(qlt::test::read_bytes(path) == before);
  CHECK(at::equal(SafetensorsFile::open(path).tensor("w"), original));
}

TEST_CASE("safetensors: a tensor misaligned for its dtype is copied", "[safetensors]") {
  TempDir dir;
  const auto path = dir / "odd.safetensors";
  // 3 bytes of U8 first: "f" starts at data offset 3, not a multiple of 4.
  const at::Tensor f = at::arange(6, at::kFloat) + 0.5;
  save_safetensors(path, {{"odd", at::full({3}, 7, at::kByte)}, {"f", f}});
  const auto file = SafetensorsFile::open(path);
  REQUIRE(file.info("f").begin == 3);
  const at::Tensor got = file.tensor("f");
  CHECK(at::equal(got, f));
  CHECK(reinterpret_cast<uintptr_t>(got.data_ptr()) % alignof(float) == 0);
  CHECK_FALSE(mapping_of(path, got.data_ptr()).found);  // a copy, not the mapping
  CHECK(mapping_of(path, file.tensor("odd").data_ptr()).found);
}

TEST_CASE("safetensors: a file written by Python (tests/fixtures/llama_gqa)", "[safetensors]") {
  // Written by the safetensors Python package (tests/fixtures/README.md); shapes cross-checked
  // against the config.json that transformers wrote beside it.
  const std::filesystem::path dir =
      std::filesystem::path(QLT_SOURCE_DIR) / "tests/fixtures/llama_gqa";
  const auto file = SafetensorsFile::open(dir / "model.safetensors");
  std::ifstream config_in(dir / "config.json");
  const auto config = nlohmann::json::parse(config_in);
  const int64_t vocab = config.at("vocab_size"), hidden = config.at("hidden_size");
  const int64_t layers = config.at("num_hidden_layers");

  CHECK(file.metadata().at("format") == "pt");
  CHECK(file.tensors().size() == static_cast<size_t>(9 * layers + 3));  // 9 per layer + 3
  CHECK(file.info("model.embed_tokens.weight").shape == std::vector<int64_t>{vocab, hidden});
  CHECK(file.info("lm_head.weight").shape == std::vector<int64_t>{vocab, hidden});
  for (const auto& info : file.tensors()) {
    INFO(info.name);
    const at::Tensor t = file.tensor(info.name);
    CHECK(t.sizes() == at::IntArrayRef(info.shape));
    CHECK(t.scalar_type() == at::kFloat);
    CHECK(at::isfinite(t).all().item<bool>());
    // The Python writer orders tensors by alignment, so every one is zero copy.
    CHECK(mapping_of(dir / "model.safetensors", t.data_ptr()).found);
  }
  // Norm weights are 1 + 0.1 N(0, 1): mean near 1, not garbage from a wrong offset.
  const float mean = file.tensor("model.norm.weight").mean().item<float>();
  CHECK(mean > 0.8f);
  CHECK(mean < 1.2f);
}

TEST_CASE("safetensors: a sharded checkpoint written by Python (tests/fixtures/llama3_tied)",
          "[safetensors]") {
  const std::filesystem::path dir =
      std::filesystem::path(QLT_SOURCE_DIR) / "tests/fixtures/llama3_tied";
  const auto ckpt = qlt::io::SafetensorsCheckpoint::open(dir);
  std::ifstream index_in(dir / "model.safetensors.index.json");
  const auto weight_map = nlohmann::json::parse(index_in).at("weight_map");
  REQUIRE(ckpt.names().size() == weight_map.size());
  std::set<std::filesystem::path> shards;
  for (const auto& name : ckpt.names()) {
    INFO(name);
    CHECK(ckpt.file_of(name) == dir / weight_map.at(name).get<std::string>());
    shards.insert(ckpt.file_of(name));
    const at::Tensor t = ckpt.tensor(name);
    CHECK(t.sizes() == at::IntArrayRef(ckpt.info(name).shape));
    CHECK(at::isfinite(t).all().item<bool>());
  }
  CHECK(shards.size() == 3);
  CHECK_FALSE(ckpt.contains("lm_head.weight"));  // tied embeddings
}
