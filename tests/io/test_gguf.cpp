// GGUF reader and writer: files written by the `gguf` Python package read back exactly
// (tests/fixtures/gguf, scripts/fixtures/make_gguf_fixtures.py), our writer reproduces them
// byte for byte, every value type round-trips, alignments other than 32, version 2, the
// typed getters, and the ggml type table against the package's GGML_QUANT_SIZES.
#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/json_reader.h"
#include "io/ggml_types.h"
#include "io/gguf.h"
#include "io/gguf_test_util.h"
#include "io/gguf_writer.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using qlt::io::GgmlType;
using qlt::io::GgufFile;
using qlt::io::GgufValue;
using qlt::io::GgufValueType;
using qlt::io::GgufWriter;
using qlt::test::require_user_error;
using qlt::test::gguf::add_small_model_metadata;
using qlt::test::gguf::parse;
using qlt::test::gguf::pattern;
using qlt::test::gguf::RawGguf;
using qlt::test::gguf::small_model_writer;

const fs::path kGgufFixtures = qlt::test::kFixtures / "gguf";

GgufValueType type_named(const std::string& name) {
  for (uint32_t t = 0; t <= 12; ++t) {
    const auto type = static_cast<GgufValueType>(t);
    if (qlt::io::gguf_value_type_name(type) == name) return type;
  }
  FAIL("unknown type name " << name);
  return GgufValueType::UINT8;
}

// expected.json's form of a value (see make_gguf_fixtures.py) as a GgufValue.
GgufValue value_from_json(GgufValueType type, const nlohmann::json& j) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::UINT8:
    case GgufValueType::UINT16:
    case GgufValueType::UINT32:
    case GgufValueType::UINT64:
      v.value = j.get<uint64_t>();
      break;
    case GgufValueType::INT8:
    case GgufValueType::INT16:
    case GgufValueType::INT32:
    case GgufValueType::INT64:
      v.value = j.get<int64_t>();
      break;
    case GgufValueType::FLOAT32:
      v.value = double{std::bit_cast<float>(j.at("bits").get<uint32_t>())};
      break;
    case GgufValueType::FLOAT64:
      v.value = std::bit_cast<double>(j.at("bits").get<uint64_t>());
      break;
    case GgufValueType::BOOL:
      v.value = j.get<bool>();
      break;
    case GgufValueType::STRING:
      v.value = j.get<std::string>();
      break;
    case GgufValueType::ARRAY: {
      qlt::io::GgufArray a;
      a.element_type = type_named(j.at("element_type").get<std::string>());
      for (const auto& item : j.at("items"))
        a.items.push_back(value_from_json(a.element_type, item));
      v.value = std::move(a);
      break;
    }
  }
  return v;
}

std::string hex(std::span<const uint8_t> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const uint8_t b : bytes) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

const nlohmann::json& gguf_expected() {
  static const nlohmann::json j = qlt::read_json_file(kGgufFixtures / "expected.json");
  return j;
}

// Every key, value and tensor of `file` as a writer (tensors as views into the file).
GgufWriter rewrite_gguf(const GgufFile& file) {
  GgufWriter w;
  for (const auto& [key, value] : file.metadata()) w.add(key, value);
  for (const auto& t : file.tensors())
    w.add_tensor_view(t.name, t.type, t.dims, file.tensor_bytes(t));
  return w;
}

// A value of every type, extremes included, plus arrays of each, empty ones and nesting.
std::vector<std::pair<std::string, GgufValue>> every_value() {
  std::vector<std::pair<std::string, GgufValue>> m;
  m.emplace_back("u8", GgufValue::u8(255));
  m.emplace_back("i8", GgufValue::i8(-128));
  m.emplace_back("u16", GgufValue::u16(65535));
  m.emplace_back("i16", GgufValue::i16(-32768));
  m.emplace_back("u32", GgufValue::u32(UINT32_MAX));
  m.emplace_back("i32", GgufValue::i32(INT32_MIN));
  m.emplace_back("f32", GgufValue::f32(-0.0f));
  m.emplace_back("f32.nan", GgufValue::f32(std::numeric_limits<float>::quiet_NaN()));
  m.emplace_back("f32.denormal", GgufValue::f32(std::numeric_limits<float>::denorm_min()));
  m.emplace_back("bool", GgufValue::boolean(true));
  m.emplace_back("string", GgufValue::str(std::string("nul\0inside \xe4\xb8\x96", 14)));
  m.emplace_back("string.empty", GgufValue::str(""));
  m.emplace_back("u64", GgufValue::u64(UINT64_MAX));
  m.emplace_back("i64", GgufValue::i64(INT64_MIN));
  m.emplace_back("f64", GgufValue::f64(std::numeric_limits<double>::infinity()));
  m.emplace_back("array.u8",
                 GgufValue::array(GgufValueType::UINT8, {GgufValue::u8(0), GgufValue::u8(9)}));
  m.emplace_back("array.i16", GgufValue::array(GgufValueType::INT16, {GgufValue::i16(-7)}));
  m.emplace_back("array.f64", GgufValue::array(GgufValueType::FLOAT64,
                                               {GgufValue::f64(1e-300), GgufValue::f64(-2.0)}));
  m.emplace_back("array.bool", GgufValue::array(GgufValueType::BOOL, {GgufValue::boolean(false),
                                                                      GgufValue::boolean(true)}));
  m.emplace_back("array.empty", GgufValue::array(GgufValueType::FLOAT32, {}));
  m.emplace_back("array.strings", GgufValue::string_array({"", "a", "bc"}));
  // Nested to the deepest level allowed: kMaxArrayDepth arrays around one INT64.
  GgufValue deep = GgufValue::array(GgufValueType::INT64, {GgufValue::i64(42)});
  for (int d = 1; d < qlt::io::kMaxArrayDepth; ++d) {
    deep = GgufValue::array(GgufValueType::ARRAY, {deep});
  }
  m.emplace_back("array.deepest", deep);
  m.emplace_back(
      "array.mixed_inner",
      GgufValue::array(GgufValueType::ARRAY,
                       {GgufValue::array(GgufValueType::UINT64, {GgufValue::u64(1)}),
                        GgufValue::array(GgufValueType::STRING, {}),
                        GgufValue::array(GgufValueType::ARRAY, {GgufValue::string_array({"z"})})}));
  return m;
}

GgufWriter every_value_writer() {
  GgufWriter w;
  for (const auto& [key, value] : every_value()) w.add(key, value);
  return w;
}

}  // namespace

TEST_CASE("ggml types: the table is the gguf package's GGML_QUANT_SIZES (and ggml's)", "[gguf]") {
  const auto& sizes = gguf_expected().at("ggml_quant_sizes");
  REQUIRE(sizes.size() >= 33);
  for (const auto& [name, row] : sizes.items()) {
    INFO(name);
    const auto id = row.at(0).get<uint32_t>();
    const auto traits = qlt::io::ggml_type_traits(id);
    REQUIRE(traits.has_value());
    CHECK(traits->name == name);
    CHECK(static_cast<uint32_t>(traits->type) == id);
    CHECK(traits->block_elements == row.at(1).get<int64_t>());
    if (name == "Q8_1") {
      // The one disagreement: ggml's block_q8_1 is 36 bytes (static_assert in
      // ggml-common.h), the package says 40; ggml reads the files (see ggml_types.h).
      CHECK(row.at(2).get<int64_t>() == 40);
      CHECK(traits->block_bytes == 36);
    } else {
      CHECK(traits->block_bytes == row.at(2).get<int64_t>());
    }
  }
  // What the package 0.19.0 lacks, from ggml's type_traits at d99724f.
  const auto q2_0 = qlt::io::ggml_type_traits(42);
  REQUIRE(q2_0.has_value());
  CHECK(q2_0->name == "Q2_0");
  CHECK(q2_0->block_elements == 64);
  CHECK(q2_0->block_bytes == 18);
  // The ids ggml removed or never used are not types; the removed ones keep their names.
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u, UINT32_MAX}) {
    CHECK_FALSE(qlt::io::ggml_type_traits(id).has_value());
  }
  CHECK(qlt::io::ggml_removed_type_name(31) == "Q4_0_4_4");
  CHECK(qlt::io::ggml_removed_type_name(5) == "Q4_3");
  CHECK_FALSE(qlt::io::ggml_removed_type_name(43).has_value());
  CHECK(qlt::io::ggml_type_name(12) == "Q4_K");
  CHECK(qlt::io::ggml_type_name(77) == "type 77");
  CHECK(qlt::io::ggml_type_traits(GgmlType::BF16).block_bytes == 2);
}

TEST_CASE("gguf: files written by the gguf package read back with identical metadata and tensors",
          "[gguf]") {
  for (const auto& [file_name, want] : gguf_expected().at("files").items()) {
    INFO(file_name);
    const GgufFile file = GgufFile::open(kGgufFixtures / file_name);
    CHECK(file.version() == want.at("version").get<uint32_t>());
    CHECK(file.alignment() == want.at("alignment").get<uint64_t>());
    CHECK(file.data_offset() % file.alignment() == 0);
    const auto& meta = want.at("metadata");
    REQUIRE(file.metadata().size() == meta.size());
    for (size_t i = 0; i < meta.size(); ++i) {
      const std::string key = meta[i].at(0).get<std::string>();
      INFO("key " << key);
      const GgufValueType type = type_named(meta[i].at(1).at(0).get<std::string>());
      const GgufValue value = value_from_json(type, meta[i].at(1).at(1));
      CHECK(file.metadata()[i].first == key);
      CHECK(file.metadata()[i].second == value);
      REQUIRE(file.find(key) != nullptr);
      CHECK(*file.find(key) == value);
    }
    const auto& tensors = want.at("tensors");
    REQUIRE(file.tensors().size() == tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = file.tensors()[i];
      INFO("tensor " << t.name);
      CHECK(t.name == tensors[i].at("name").get<std::string>());
      CHECK(qlt::io::ggml_type_name(static_cast<uint32_t>(t.type)) ==
            tensors[i].at("type").get<std::string>());
      CHECK(t.dims == tensors[i].at("dims").get<std::vector<int64_t>>());
      CHECK(t.offset == tensors[i].at("offset").get<uint64_t>());
      CHECK(hex(file.tensor_bytes(t)) == tensors[i].at("hex").get<std::string>());
      CHECK(t.nbytes * 2 == tensors[i].at("hex").get<std::string>().size());
      CHECK(&file.tensor(t.name) == &t);
    }
  }
  // Spot checks in the terms a model loader uses.
  const GgufFile file = GgufFile::open(kGgufFixtures / "python_writer.gguf");
  CHECK(file.get_string("general.architecture") == "llama");
  CHECK(file.get_uint("test.uint64") == UINT64_MAX);
  CHECK(file.get_int("test.int64") == INT64_MIN);
  CHECK(file.get_float("test.float32") == double{0.1f});
  CHECK(file.get_bool("test.bool.true"));
  CHECK(file.get_string_array("tokenizer.ggml.tokens") ==
        std::vector<std::string>{"<unk>", "<s>", "</s>", "\xe2\x96\x81hello", "<0xFF>"});
  CHECK(file.get_float_array("tokenizer.ggml.scores") ==
        std::vector<double>{0.0, -1.0, -2.5, -3.25, -100.0});
  CHECK(file.get_int_array("tokenizer.ggml.token_type") == std::vector<int64_t>{2, 3, 3, 1, 6});
  const auto& q8 = file.tensor("blk.0.attn_q.weight");
  CHECK(q8.type == GgmlType::Q8_0);
  CHECK(q8.torch_shape() == std::vector<int64_t>{4, 64});
  CHECK(q8.numel() == 256);
  CHECK(q8.nbytes == 8 * 34);
  CHECK(file.tensor("i32.3d").torch_shape() == std::vector<int64_t>{2, 1, 3});
  CHECK(file.tensor("f32.4d").dims == std::vector<int64_t>{3, 1, 2, 1});
}

TEST_CASE("gguf: our writer reproduces the gguf package's files byte for byte", "[gguf]") {
  for (const char* name : {"python_writer.gguf", "python_writer_align64.gguf"}) {
    INFO(name);
    const std::string original = qlt::test::read_bytes(kGgufFixtures / name);
    const GgufFile file = parse(original, name);
    const GgufWriter w = rewrite_gguf(file);
    CHECK(w.file_size() == original.size());
    CHECK(w.to_bytes() == original);
  }
}

TEST_CASE("gguf: every value type round-trips through the writer and the reader", "[gguf]") {
  const GgufWriter w = every_value_writer();
  const std::string bytes = w.to_bytes();
  const GgufFile file = parse(bytes);
  CHECK(file.version() == 3);
  CHECK(file.tensors().empty());
  const GgufWriter again = rewrite_gguf(file);
  CHECK(again.to_bytes() == bytes);
  // Exactly what was given, in order (floats by bits: NaN, -0.0, the denormal).
  const auto given = every_value();
  REQUIRE(file.metadata().size() == given.size());
  for (size_t i = 0; i < given.size(); ++i) {
    INFO(given[i].first << " = " << qlt::io::describe(given[i].second));
    CHECK(file.metadata()[i].first == given[i].first);
    CHECK(file.metadata()[i].second == given[i].second);
  }
  // GgufValue equality is not vacuous.
  CHECK_FALSE(GgufValue::f32(0.0f) == GgufValue::f32(-0.0f));
  CHECK_FALSE(GgufValue::u8(1) == GgufValue::u16(1));
  CHECK_FALSE(GgufValue::string_array({"a"}) == GgufValue::string_array({"b"}));
  CHECK(std::signbit(file.get_float("f32")));
  CHECK(std::isnan(file.get_float("f32.nan")));
  CHECK(file.get_float("f32.denormal") == double{std::numeric_limits<float>::denorm_min()});
  CHECK(file.get_string("string") == std::string("nul\0inside \xe4\xb8\x96", 14));
  CHECK(file.get_string("string.empty").empty());
  CHECK(file.get_uint("u8") == 255);
  CHECK(file.get_int("i8") == -128);
  CHECK(file.get_int("u16") == 65535);
  CHECK(file.get_int("i32") == INT32_MIN);
  CHECK(file.get_uint("u64") == UINT64_MAX);
  CHECK(file.get_float("f64") == std::numeric_limits<double>::infinity());
  CHECK(file.get_float_array("array.empty").empty());
  CHECK(file.get_float_array("array.f64") == std::vector<double>{1e-300, -2.0});
  CHECK(file.get_int_array("array.u8") == std::vector<int64_t>{0, 9});
  CHECK(file.get_string_array("array.strings") == std::vector<std::string>{"", "a", "bc"});
  // The deepest nesting: kMaxArrayDepth arrays around 42.
  const GgufValue* v = file.find("array.deepest");
  for (int d = 0; d < qlt::io::kMaxArrayDepth; ++d) {
    REQUIRE(v->type == GgufValueType::ARRAY);
    const auto& a = std::get<qlt::io::GgufArray>(v->value);
    REQUIRE(a.items.size() == 1);
    v = &a.items[0];
  }
  CHECK(*v == GgufValue::i64(42));
  const auto& mixed = std::get<qlt::io::GgufArray>(file.find("array.mixed_inner")->value);
  REQUIRE(mixed.items.size() == 3);
  CHECK(std::get<qlt::io::GgufArray>(mixed.items[1].value).element_type == GgufValueType::STRING);
  CHECK(qlt::io::describe(*file.find("array.mixed_inner")) == "ARRAY of 3 ARRAY");
  CHECK(qlt::io::describe(*file.find("u8")) == "UINT8 255");
  CHECK(qlt::io::describe(*file.find("string")) == "STRING 'nul\\x00inside \\xe4\\xb8\\x96'");
}

TEST_CASE("gguf: tensors round-trip at alignments other than 32", "[gguf]") {
  for (const uint32_t alignment : {1u, 8u, 64u, 256u, 4096u}) {
    INFO("alignment " << alignment);
    GgufWriter w = small_model_writer();
    w.add("general.alignment", GgufValue::u32(alignment));
    const std::string bytes = w.to_bytes();
    CHECK(bytes.size() == w.file_size());
    const GgufFile file = parse(bytes);
    CHECK(file.alignment() == alignment);
    CHECK(file.data_offset() % alignment == 0);
    REQUIRE(file.tensors().size() == 3);
    uint64_t expected_offset = 0;
    for (size_t i = 0; i < 3; ++i) {
      const auto& t = file.tensors()[i];
      CHECK(t.offset == expected_offset);
      CHECK(t.offset % alignment == 0);
      expected_offset += (t.nbytes + alignment - 1) / alignment * alignment;
    }
    const auto& q41 = file.tensor("blk.0.ffn_up.weight");
    CHECK(q41.type == GgmlType::Q4_1);
    CHECK(q41.nbytes == 40);
    const auto data = file.tensor_bytes(q41);
    CHECK(std::vector<uint8_t>(data.begin(), data.end()) == pattern(40, 2));
    CHECK(file.tensor("blk.0.attn_q.weight").torch_shape() == std::vector<int64_t>{2, 32});
    CHECK(rewrite_gguf(file).to_bytes() == bytes);
  }
}

TEST_CASE("gguf writer: deferred tensors are made when written, once, into the same bytes",
          "[gguf]") {
  const std::string eager = small_model_writer().to_bytes();
  GgufWriter w;
  add_small_model_metadata(w);  // small_model_writer()'s, with two of its tensors deferred
  std::vector<std::string> made;
  w.add_tensor("output_norm.weight", GgmlType::F32, {8}, pattern(32));
  w.add_tensor_deferred("blk.0.attn_q.weight", GgmlType::Q8_0, {32, 2}, [&] {
    made.push_back("attn_q");
    return pattern(68, 1);
  });
  w.add_tensor_deferred("blk.0.ffn_up.weight", GgmlType::Q4_1, {64, 1}, [&] {
    made.push_back("ffn_up");
    return pattern(40, 2);
  });
  CHECK(made.empty());  // declaring makes nothing
  CHECK(w.file_size() == eager.size());
  CHECK(w.to_bytes() == eager);
  CHECK(made == std::vector<std::string>{"attn_q", "ffn_up"});  // in file order, once each

  SECTION("a producer that makes the wrong number of bytes is an internal error") {
    GgufWriter bad;
    bad.add_tensor_deferred("t", GgmlType::F32, {4}, [] { return std::vector<uint8_t>(12); });
    CHECK_THROWS_AS(bad.to_bytes(), c10::Error);
  }
  SECTION("bad dims are refused when declared, as for eager tensors") {
    GgufWriter bad;
    require_user_error(
        [&] {
          bad.add_tensor_deferred("t", GgmlType::Q8_0, {33}, [] { return std::vector<uint8_t>(); });
        },
        {"'t'", "not a multiple of the Q8_0 block of 32 elements"});
  }
}

TEST_CASE("gguf: a version 2 file reads like version 3", "[gguf]") {
  std::string bytes = small_model_writer().to_bytes();
  bytes[4] = 2;  // u32 version after the magic; v2 and v3 share the layout
  const GgufFile file = parse(bytes);
  CHECK(file.version() == 2);
  CHECK(file.get_string("general.name") == "tiny");
  CHECK(file.get_string_array("tokenizer.ggml.tokens").size() == 4);
  const auto data = file.tensor_bytes(file.tensor("output_norm.weight"));
  CHECK(std::vector<uint8_t>(data.begin(), data.end()) == pattern(32));
}

TEST_CASE("gguf: open() maps a file written atomically; is_gguf_file", "[gguf]") {
  qlt::test::TempDir dir;
  const auto path = dir / "model.gguf";
  small_model_writer().write(path);
  CHECK(qlt::io::is_gguf_file(path));
  const GgufFile file = GgufFile::open(path);
  CHECK(file.origin() == path.string());
  CHECK(file.size() == fs::file_size(path));
  const auto data = file.tensor_bytes(file.tensor("blk.0.attn_q.weight"));
  CHECK(std::vector<uint8_t>(data.begin(), data.end()) == pattern(68, 1));
  // A copy keeps the mapping alive after the original is gone.
  auto copy = std::make_unique<GgufFile>(file);
  const GgufFile moved = std::move(*copy);
  copy.reset();
  CHECK(moved.tensor_bytes(moved.tensor("output_norm.weight"))[5] == 5);
  // Overwriting goes through a temporary and a rename: no temporary left behind.
  small_model_writer().write(path);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  qlt::test::write_bytes(dir / "short", "GGU");
  qlt::test::write_bytes(dir / "st.safetensors", std::string(8, '\0') + "{}");
  CHECK_FALSE(qlt::io::is_gguf_file(dir / "short"));
  CHECK_FALSE(qlt::io::is_gguf_file(dir / "st.safetensors"));
  CHECK_FALSE(qlt::io::is_gguf_file(dir / "missing.gguf"));
  CHECK_FALSE(qlt::io::is_gguf_file(dir.path));
  require_user_error([&] { GgufFile::open(dir / "missing.gguf"); },
                     {"missing.gguf", "cannot open"});
  require_user_error([&] { GgufFile::open(dir / "st.safetensors"); },
                     {"st.safetensors", "does not start with the magic \"GGUF\""});
}

TEST_CASE("gguf: files without tensors or without metadata", "[gguf]") {
  GgufWriter only_meta;
  only_meta.add("general.architecture", GgufValue::str("llama"));
  const GgufFile a = parse(only_meta.to_bytes());
  CHECK(a.tensors().empty());
  CHECK(a.metadata().size() == 1);

  GgufWriter only_tensor;
  only_tensor.add_tensor("w", GgmlType::BF16, {3}, pattern(6));
  const GgufFile b = parse(only_tensor.to_bytes());
  CHECK(b.metadata().empty());
  CHECK(b.alignment() == 32);
  CHECK(b.data_offset() == 64);  // 24-byte header + 1 + 8 + 4 + 8 + 4 + 8 = 57, padded
  CHECK(b.tensor("w").nbytes == 6);

  // The smallest file: a header with nothing in it.
  const GgufFile c = parse(RawGguf{}.bytes());
  CHECK(c.metadata().empty());
  CHECK(c.tensors().empty());
}

TEST_CASE("gguf: typed getters name the key and what they found", "[gguf]") {
  const GgufFile file = parse(every_value_writer().to_bytes(), "vals.gguf");
  require_user_error([&] { file.get_string("nope"); },
                     {"vals.gguf", "has no metadata key 'nope'", "23 keys"});
  require_user_error([&] { file.get_string("u32"); },
                     {"vals.gguf", "key 'u32' is UINT32 4294967295, not a STRING"});
  require_user_error([&] { file.get_uint("i8"); }, {"key 'i8' is INT8 -128", "non-negative"});
  require_user_error([&] { file.get_int("u64"); }, {"key 'u64'", "within int64"});
  require_user_error([&] { file.get_uint("bool"); }, {"key 'bool' is BOOL true"});
  require_user_error([&] { file.get_float("i32"); }, {"key 'i32'", "FLOAT32 or FLOAT64"});
  require_user_error([&] { file.get_bool("u8"); }, {"key 'u8'", "not a BOOL"});
  require_user_error([&] { file.get_string_array("array.u8"); },
                     {"key 'array.u8' is ARRAY of 2 UINT8, not an ARRAY of STRING"});
  require_user_error([&] { file.get_float_array("array.strings"); }, {"key 'array.strings'"});
  require_user_error([&] { file.get_int_array("array.f64"); }, {"key 'array.f64'", "integers"});
  require_user_error([&] { file.get_int_array("string"); }, {"key 'string' is STRING"});
  CHECK(file.find("nope") == nullptr);
  CHECK(file.find_tensor("nope") == nullptr);
  require_user_error([&] { file.tensor("blk.9.attn_q.weight"); },
                     {"vals.gguf", "no tensor 'blk.9.attn_q.weight'", "0 tensors"});
  // An UINT64 array element beyond int64.
  GgufWriter w;
  w.add("big",
        GgufValue::array(GgufValueType::UINT64, {GgufValue::u64(1), GgufValue::u64(UINT64_MAX)}));
  const GgufFile big = parse(w.to_bytes());
  require_user_error([&] { big.get_int_array("big"); }, {"element 1 of key 'big'", "int64"});
}

TEST_CASE("gguf writer: refuses what the reader (or llama.cpp) would refuse", "[gguf]") {
  GgufWriter w;
  w.add("a", GgufValue::u8(1));
  require_user_error([&] { w.add("a", GgufValue::u8(2)); }, {"key 'a'", "added twice"});
  require_user_error([&] { w.add("", GgufValue::u8(2)); }, {"1 to 65535 bytes"});
  require_user_error(
      [&] {
        w.add("u8", GgufValue{GgufValueType::UINT8, uint64_t{256}});
      },
      {"key 'u8'", "256 is out of the range of UINT8"});
  require_user_error(
      [&] {
        w.add("i8", GgufValue{GgufValueType::INT8, uint64_t{1}});
      },
      {"key 'i8'", "must hold a int64_t"});
  require_user_error(
      [&] {
        w.add("f", GgufValue{GgufValueType::FLOAT32, true});
      },
      {"key 'f'", "must hold a double"});
  require_user_error(
      [&] {
        w.add("arr", GgufValue::array(GgufValueType::UINT8, {GgufValue::u8(1), GgufValue::i8(1)}));
      },
      {"key 'arr'", "element 1 is INT8, but the array holds UINT8"});
  GgufValue deep = GgufValue::array(GgufValueType::UINT8, {});
  for (int d = 0; d < qlt::io::kMaxArrayDepth; ++d) {
    deep = GgufValue::array(GgufValueType::ARRAY, {deep});
  }
  require_user_error([&] { w.add("deep", deep); }, {"key 'deep'", "nested deeper than 8"});
  require_user_error([&] { w.add("general.alignment", GgufValue::u64(64)); },
                     {"general.alignment", "UINT32 power of two"});
  require_user_error([&] { w.add("general.alignment", GgufValue::u32(48)); },
                     {"general.alignment", "UINT32 48"});

  w.add_tensor("t", GgmlType::F32, {2}, pattern(8));
  require_user_error([&] { w.add_tensor("t", GgmlType::F32, {2}, pattern(8)); },
                     {"tensor 't'", "added twice"});
  require_user_error([&] { w.add_tensor(std::string(64, 'n'), GgmlType::F32, {2}, pattern(8)); },
                     {"1 to 63 bytes", "this one 64"});
  require_user_error([&] { w.add_tensor("x", GgmlType::F32, {2}, pattern(7)); },
                     {"tensor 'x'", "dims [2] of F32 need 8 bytes, 7 were given"});
  require_user_error([&] { w.add_tensor("x", GgmlType::Q4_K, {128}, pattern(72)); },
                     {"tensor 'x'", "ne[0] = 128 is not a multiple of the Q4_K block of 256"});
  require_user_error(
      [&] {
        w.add_tensor("x", GgmlType::F32, {1, 1, 1, 1, 1}, pattern(4));
      },
      {"tensor 'x'", "5 dims"});
  require_user_error(
      [&] {
        w.add_tensor("x", GgmlType::F32, {2, 0}, {});
      },
      {"tensor 'x'", "each must be >= 1"});
  require_user_error([&] { w.add_tensor("x", static_cast<GgmlType>(4), {32}, pattern(18)); },
                     {"tensor 'x'", "unknown ggml type 4"});
  // Nothing refused was added.
  const GgufFile file = parse(w.to_bytes());
  CHECK(file.metadata().size() == 1);
  CHECK(file.tensors().size() == 1);
}

TEST_CASE("gguf: the real SmolLM2 Q4_1 file reads, and our writer rewrites it byte for byte",
          "[gguf][smollm2]") {
  // Fetched by scripts/models/smollm2.sh (scripts/test.sh runs it); absent on a bare checkout.
  const fs::path path = qlt::test::kSmolLm2Gguf;
  if (!fs::exists(path)) {
    WARN("skipped: " << path << " is absent (scripts/models/smollm2.sh fetches it)");
    return;
  }
  const GgufFile file = GgufFile::open(path);
  CHECK(file.version() == 3);
  CHECK(file.metadata().size() == 33);
  CHECK(file.get_string("general.architecture") == "llama");
  CHECK(file.get_uint("llama.block_count") == 30);
  CHECK(file.get_string("tokenizer.ggml.pre") == "smollm");
  CHECK(file.get_string_array("tokenizer.ggml.tokens").size() == 49152);
  CHECK(file.get_string_array("tokenizer.ggml.merges").size() == 48900);
  REQUIRE(file.tensors().size() == 272);  // 210 Q4_1 linears, Q8_0 embedding, 61 F32 norms
  int q4_1 = 0;
  for (const auto& t : file.tensors()) q4_1 += t.type == GgmlType::Q4_1;
  CHECK(q4_1 == 210);
  const auto& embd = file.tensor("token_embd.weight");
  CHECK(embd.type == GgmlType::Q8_0);
  CHECK(embd.torch_shape() == std::vector<int64_t>{49152, 576});
  const std::string rewritten = rewrite_gguf(file).to_bytes();
  REQUIRE(rewritten.size() == file.size());
  CHECK(rewritten == qlt::test::read_bytes(path));
}
