// bitsandbytes 4-bit safetensors layout: reading every quantized weight of the
// transformers-written fixture (tests/fixtures/bnb_llama_gqa), writing it back byte for byte
// (quant-state JSON included), one UserError per malformed input, and config.json's
// quantization_config block.
#include <ATen/ATen.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "quant/bnb_fixture_copy.h"
#include "quant/bnb_layout.h"
#include "quant/nf4.h"
#include "test_common.h"
#include "test_paths.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qlt::io::SafetensorsCheckpoint;
using qlt::io::SafetensorsFile;
using qlt::quant::bnb_nf4_tensors;
using qlt::quant::Nf4Tensor;
using qlt::quant::read_bnb_nf4;
using qlt::test::BnbFixtureCopy;
using qlt::test::kBnbFixtureDir;
using qlt::test::kBnbStateSuffix;
using qlt::test::read_json;
using qlt::test::require_user_error;
using qlt::test::same_tensor;
using qlt::test::TempDir;
using qlt::test::tensor_text;
using qlt::test::text_tensor;
using Tensors = std::vector<std::pair<std::string, at::Tensor>>;

const fs::path kFp32Dir = fs::path(QLT_SOURCE_DIR) / "tests/fixtures/llama_gqa";
const fs::path kCasesFile = fs::path(QLT_SOURCE_DIR) / "tests/fixtures/nf4/cases.safetensors";

// The weight names of the quantized modules (14 in the fixture).
std::vector<std::string> quantized_weights(const SafetensorsCheckpoint& ckpt) {
  std::vector<std::string> out;
  for (const auto& name : ckpt.names())
    if (name.size() > kBnbStateSuffix.size() &&
        name.compare(name.size() - kBnbStateSuffix.size(), kBnbStateSuffix.size(),
                     kBnbStateSuffix) == 0)
      out.push_back(name.substr(0, name.size() - kBnbStateSuffix.size()));
  return out;
}

TEST_CASE("bnb: every quantized weight of the fixture reads and writes back byte for byte",
          "[bnb]") {
  const auto ckpt = SafetensorsCheckpoint::open(kBnbFixtureDir);
  const auto weights = quantized_weights(ckpt);
  REQUIRE(weights.size() == 14);
  CHECK_FALSE(qlt::quant::is_bnb_nf4_module(ckpt, "model.norm.weight"));
  CHECK_FALSE(qlt::quant::is_bnb_nf4_module(ckpt, "lm_head.weight"));
  CHECK_FALSE(qlt::quant::is_bnb_nf4_module(ckpt, "model.embed_tokens.weight"));

  for (const auto& w : weights) {
    INFO(w);
    CHECK(qlt::quant::is_bnb_nf4_module(ckpt, w));
    const json state = json::parse(tensor_text(ckpt.tensor(w + kBnbStateSuffix)));
    const Nf4Tensor q = read_bnb_nf4(ckpt, w);
    CHECK(q.shape == state["shape"].get<std::vector<int64_t>>());
    CHECK(q.block_size == 64);
    CHECK(q.double_quant());
    CHECK(q.dtype == at::kFloat);
    CHECK(q.offset == static_cast<float>(state["nested_offset"].get<double>()));
    const int64_t n = q.shape[0] * q.shape[1];
    CHECK(q.numel() == n);
    CHECK(q.num_blocks() == n / 64);
    CHECK(q.packed.sizes() == at::IntArrayRef({(n + 1) / 2, 1}));
    CHECK(q.absmax.scalar_type() == at::kByte);
    CHECK(q.nested_absmax.sizes() == at::IntArrayRef({1}));

    // The six entries transformers wrote, in bnb's state-dict order, each byte-identical.
    const Tensors written = bnb_nf4_tensors(w, q);
    std::vector<std::string> names;
    for (const auto& [name, t] : written) names.push_back(name);
    CHECK(names == std::vector<std::string>{w, w + ".absmax", w + ".quant_map",
                                            w + ".nested_absmax", w + ".nested_quant_map",
                                            w + kBnbStateSuffix});
    for (const auto& [name, t] : written) {
      INFO(name);
      CHECK(same_tensor(t, ckpt.tensor(name)));
    }
    CHECK(tensor_text(written.back().second) == tensor_text(ckpt.tensor(w + kBnbStateSuffix)));
    // An explicit dtype name writes the same.
    CHECK(same_tensor(bnb_nf4_tensors(w, q, "float32").back().second, written.back().second));
  }
}

TEST_CASE("bnb: the fixture's quant-state text, verbatim", "[bnb]") {
  const auto ckpt = SafetensorsCheckpoint::open(kBnbFixtureDir);
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  CHECK(qlt::quant::bnb_nf4_quant_state_json(read_bnb_nf4(ckpt, w), "float32") ==
        "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [64, "
        "160], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": "
        "0.26313430070877075}");
}

TEST_CASE("bnb: quantizing the fp32 fixture reproduces transformers' file", "[bnb]") {
  // llama_gqa is the model bnb_llama_gqa was quantized from (fp32, blocksize 64, double quant).
  const auto fp32 = SafetensorsCheckpoint::open(kFp32Dir);
  const auto bnb = SafetensorsCheckpoint::open(kBnbFixtureDir);
  for (const auto& w : quantized_weights(bnb)) {
    INFO(w);
    const Nf4Tensor q = qlt::quant::quantize_nf4(fp32.tensor(w), {64, true});
    for (const auto& [name, t] : bnb_nf4_tensors(w, q)) {
      INFO(name);
      CHECK(same_tensor(t, bnb.tensor(name)));
    }
  }
}

TEST_CASE("bnb: a weight without double quantization round-trips (4 entries)", "[bnb]") {
  // Case i of the nf4 fixtures: bf16 [64, 128], blocksize 64, fp32 absmax.
  const auto cases = SafetensorsFile::open(kCasesFile);
  Nf4Tensor q;
  q.packed = cases.tensor("i.packed");
  q.absmax = cases.tensor("i.absmax");
  q.shape = {64, 128};
  q.dtype = at::kBFloat16;
  q.block_size = 64;
  REQUIRE_FALSE(q.double_quant());
  const std::string w = "model.layers.3.mlp.up_proj.weight";
  const Tensors written = bnb_nf4_tensors(w, q);
  REQUIRE(written.size() == 4);
  CHECK(written[0].first == w);
  CHECK(written[1].first == w + ".absmax");
  CHECK(written[2].first == w + ".quant_map");
  CHECK(written[3].first == w + kBnbStateSuffix);
  CHECK(same_tensor(written[2].second, cases.tensor("quant_map")));
  CHECK(tensor_text(written[3].second) ==
        "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [64, "
        "128]}");

  TempDir dir;
  qlt::io::save_safetensors(dir / "model.safetensors", written);
  const auto ckpt = SafetensorsCheckpoint::open(dir.path);
  CHECK(qlt::quant::is_bnb_nf4_module(ckpt, w));
  const Nf4Tensor back = read_bnb_nf4(ckpt, w);
  CHECK_FALSE(back.double_quant());
  CHECK(back.dtype == at::kBFloat16);
  CHECK(back.shape == q.shape);
  CHECK(same_tensor(back.packed, q.packed));
  CHECK(same_tensor(back.absmax, q.absmax));
  CHECK(same_tensor(qlt::quant::dequantize_nf4(back), cases.tensor("i.dequantized")));

  // Another dtype name in the JSON; an unknown one is a UserError.
  CHECK_THAT(tensor_text(bnb_nf4_tensors(w, q, "float16").back().second),
             Catch::Matchers::Contains("\"dtype\": \"float16\""));
  require_user_error([&] { bnb_nf4_tensors(w, q, "float64"); }, {w, "float64", "bfloat16"});
}

TEST_CASE("bnb: Python float repr", "[bnb]") {
  using qlt::quant::python_float_repr;
  CHECK(python_float_repr(0.0) == "0.0");
  CHECK(python_float_repr(-0.0) == "-0.0");
  CHECK(python_float_repr(1.0) == "1.0");
  CHECK(python_float_repr(-2.5) == "-2.5");
  CHECK(python_float_repr(0.1) == "0.1");
  CHECK(python_float_repr(123.456) == "123.456");
  CHECK(python_float_repr(1e-5) == "1e-05");
  CHECK(python_float_repr(0.0001) == "0.0001");
  CHECK(python_float_repr(0.00012345) == "0.00012345");
  CHECK(python_float_repr(1e16) == "1e+16");
  CHECK(python_float_repr(1e15) == "1000000000000000.0");
  CHECK(python_float_repr(1234567890123456.0) == "1234567890123456.0");
  CHECK(python_float_repr(12345678901234567.0) == "1.2345678901234568e+16");
  CHECK(python_float_repr(1.5e-7) == "1.5e-07");
  CHECK(python_float_repr(1e100) == "1e+100");
  CHECK(python_float_repr(5e-324) == "5e-324");
  CHECK(python_float_repr(1.7976931348623157e308) == "1.7976931348623157e+308");
  CHECK(python_float_repr(static_cast<double>(1e-38f)) == "9.999999350456404e-39");
  CHECK(python_float_repr(static_cast<double>(0.1f)) == "0.10000000149011612");
  CHECK(python_float_repr(0x1p-20) == "9.5367431640625e-07");
  CHECK(python_float_repr(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(python_float_repr(-std::numeric_limits<double>::infinity()) == "-inf");
  CHECK(python_float_repr(std::numeric_limits<double>::quiet_NaN()) == "nan");
}

// A copy of bnb_llama_gqa whose tensors a test spoils before reading kBnbLayoutWeight back.
const std::string kBnbLayoutWeight =
    "model.layers.0.mlp.down_proj.weight";  // [64, 160]: 160 blocks

// Writes the copy and requires read_bnb_nf4(kBnbLayoutWeight) to fail naming every part.
void require_read_error(BnbFixtureCopy& copy, const std::vector<std::string>& parts) {
  copy.save();
  const auto ckpt = SafetensorsCheckpoint::open(copy.dir.path);
  require_user_error([&] { read_bnb_nf4(ckpt, kBnbLayoutWeight); }, parts);
}

TEST_CASE("bnb: an unbroken copy reads", "[bnb]") {
  BnbFixtureCopy copy(kBnbLayoutWeight);
  copy.edit_state([](json&) {});  // compact JSON (no spaces, sorted keys) is fine too
  qlt::io::save_safetensors(copy.dir / "model.safetensors", copy.tensors);
  const auto ckpt = SafetensorsCheckpoint::open(copy.dir.path);
  const Nf4Tensor q = read_bnb_nf4(ckpt, kBnbLayoutWeight);
  CHECK(q.offset == 0.26313430070877075f);
  CHECK(q.shape == std::vector<int64_t>{64, 160});
}

TEST_CASE("bnb: quant-state errors", "[bnb]") {
  const std::string qs = kBnbLayoutWeight + kBnbStateSuffix;
  BnbFixtureCopy copy(kBnbLayoutWeight);
  SECTION("missing") {
    copy.erase(qs);
    require_read_error(copy, {kBnbLayoutWeight, qs, "missing"});
  }
  SECTION("fp4 key") {
    copy.rename(qs, kBnbLayoutWeight + ".quant_state.bitsandbytes__fp4");
    require_read_error(copy, {"bitsandbytes__fp4", "fp4", "not supported", "nf4"});
  }
  SECTION("not JSON") {
    copy.set_state_text("{\"quant_type\": \"nf4\", ");
    require_read_error(copy, {qs, "not valid JSON"});
  }
  SECTION("nested too deep (the one JSON reader's limit)") {
    copy.set_state_text(std::string(100000, '[') + std::string(100000, ']'));
    require_read_error(copy, {qs, "nested deeper than 64"});
  }
  SECTION("a key twice") {
    copy.set_state_text(R"({"quant_type": "nf4", "quant_type": "fp4"})");
    require_read_error(copy, {qs, "\"quant_type\" appears twice"});
  }
  SECTION("not an object") {
    copy.set_state_text("[1, 2]");
    require_read_error(copy, {qs, "not a JSON object"});
  }
  SECTION("not bytes") {
    copy.set(qs, at::zeros({4}, at::kFloat));
    require_read_error(copy, {qs, "U8", "F32"});
  }
  SECTION("unknown key") {
    copy.edit_state([](json& j) { j["quant_storage"] = "uint8"; });
    require_read_error(copy, {qs, "unknown", "quant_storage"});
  }
  for (const char* key : {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize",
                          "nested_dtype", "nested_offset"}) {
    SECTION(std::string("missing ") + key) {
      copy.edit_state([&](json& j) { j.erase(key); });
      require_read_error(copy, {qs, "no \"" + std::string(key) + "\""});
    }
  }
  SECTION("wrong types") {
    SECTION("quant_type") {
      copy.edit_state([](json& j) { j["quant_type"] = 4; });
      require_read_error(copy, {qs, "\"quant_type\" must be a string"});
    }
    SECTION("blocksize") {
      copy.edit_state([](json& j) { j["blocksize"] = "64"; });
      require_read_error(copy, {qs, "\"blocksize\" must be an integer", "\"64\""});
    }
    SECTION("blocksize float") {
      copy.edit_state([](json& j) { j["blocksize"] = 64.0; });
      require_read_error(copy, {qs, "\"blocksize\" must be an integer"});
    }
    SECTION("dtype") {
      copy.edit_state([](json& j) { j["dtype"] = nullptr; });
      require_read_error(copy, {qs, "\"dtype\" must be a string"});
    }
    SECTION("shape") {
      copy.edit_state([](json& j) { j["shape"] = "64x160"; });
      require_read_error(copy, {qs, "\"shape\" must be a list"});
    }
    SECTION("shape entries") {
      copy.edit_state([](json& j) { j["shape"] = json::array({64, -160}); });
      require_read_error(copy, {qs, "[64,-160]", "non-negative integer"});
    }
    SECTION("shape overflow") {
      copy.edit_state([](json& j) { j["shape"] = json::array({1ll << 40, 1ll << 40}); });
      require_read_error(copy, {qs, "64 bits"});
    }
    SECTION("empty shape") {
      copy.edit_state([](json& j) { j["shape"] = json::array(); });
      require_read_error(copy, {qs, "\"shape\" is empty"});
    }
    SECTION("zero-size shape") {
      copy.edit_state([](json& j) { j["shape"] = json::array({0, 160}); });
      require_read_error(copy, {qs, "no elements"});
    }
    SECTION("nested_blocksize") {
      copy.edit_state([](json& j) { j["nested_blocksize"] = "256"; });
      require_read_error(copy, {qs, "\"nested_blocksize\" must be an integer"});
    }
    SECTION("nested_dtype") {
      copy.edit_state([](json& j) { j["nested_dtype"] = 32; });
      require_read_error(copy, {qs, "\"nested_dtype\" must be a string"});
    }
    SECTION("nested_offset") {
      copy.edit_state([](json& j) { j["nested_offset"] = "0.26"; });
      require_read_error(copy, {qs, "\"nested_offset\" must be a number"});
    }
  }
  SECTION("quant_type fp4") {
    copy.edit_state([](json& j) { j["quant_type"] = "fp4"; });
    require_read_error(copy, {qs, "fp4", "not supported"});
  }
  SECTION("quant_type other") {
    copy.edit_state([](json& j) { j["quant_type"] = "int8"; });
    require_read_error(copy, {qs, "int8", "expected \"nf4\""});
  }
  for (int block : {0, 16, 48, 96, 8192}) {
    SECTION("blocksize " + std::to_string(block)) {
      copy.edit_state([&](json& j) { j["blocksize"] = block; });
      require_read_error(copy,
                         {qs, "blocksize " + std::to_string(block), "power of two in [32, 4096]"});
    }
  }
  SECTION("negative blocksize") {
    copy.edit_state([](json& j) { j["blocksize"] = -64; });
    require_read_error(copy, {qs, "blocksize -64", "power of two"});
  }
  SECTION("dtype") {
    copy.edit_state([](json& j) { j["dtype"] = "float64"; });
    require_read_error(copy, {qs, "\"float64\"", "float32", "bfloat16", "float16"});
  }
  SECTION("nested_blocksize") {
    copy.edit_state([](json& j) { j["nested_blocksize"] = 128; });
    require_read_error(copy, {qs, "nested_blocksize 128", "256"});
  }
  SECTION("nested_dtype") {
    copy.edit_state([](json& j) { j["nested_dtype"] = "float16"; });
    require_read_error(copy, {qs, "nested_dtype \"float16\"", "float32"});
  }
  SECTION("nested_offset out of fp32 range") {
    copy.edit_state([](json& j) { j["nested_offset"] = 1e300; });
    require_read_error(copy, {qs, "nested_offset", "finite"});
  }
}

TEST_CASE("bnb: tensor errors", "[bnb]") {
  BnbFixtureCopy copy(kBnbLayoutWeight);
  SECTION("packed weight missing") {
    copy.erase(kBnbLayoutWeight);
    require_read_error(copy, {"missing tensor " + kBnbLayoutWeight});
  }
  SECTION("packed weight not U8") {
    copy.set(kBnbLayoutWeight, at::zeros({1280, 1}, at::kFloat));
    require_read_error(copy, {kBnbLayoutWeight, "U8", "quant storage", "F32"});
  }
  SECTION("shape product disagrees with the packed bytes") {
    copy.edit_state([](json& j) { j["shape"] = json::array({64, 161}); });
    require_read_error(copy,
                       {kBnbLayoutWeight, "[64, 161]", "10304", "U8 [5152, 1]", "U8 [5120, 1]"});
  }
  SECTION("packed weight of a wrong shape") {
    copy.set(kBnbLayoutWeight, at::zeros({2560, 2}, at::kByte));
    require_read_error(copy, {kBnbLayoutWeight, "U8 [5120, 1]", "U8 [2560, 2]"});
  }
  SECTION("packed weight 1-D is accepted") {
    copy.set(kBnbLayoutWeight, copy.at(kBnbLayoutWeight).view({-1}).clone());
    qlt::io::save_safetensors(copy.dir / "model.safetensors", copy.tensors);
    const auto q = read_bnb_nf4(SafetensorsCheckpoint::open(copy.dir.path), kBnbLayoutWeight);
    CHECK(q.packed.sizes() == at::IntArrayRef({5120, 1}));
  }
  SECTION("absmax missing") {
    copy.erase(kBnbLayoutWeight + ".absmax");
    require_read_error(copy, {"missing tensor " + kBnbLayoutWeight + ".absmax"});
  }
  SECTION("absmax length disagrees with ceil(n / blocksize)") {
    copy.edit_state([](json& j) { j["blocksize"] = 32; });  // 320 blocks, 160 stored
    require_read_error(copy, {kBnbLayoutWeight + ".absmax", "U8 [320]", "U8 [160]"});
  }
  SECTION("absmax length") {
    copy.set(kBnbLayoutWeight + ".absmax", at::zeros({161}, at::kByte));
    require_read_error(copy, {kBnbLayoutWeight + ".absmax", "U8 [160]", "U8 [161]"});
  }
  SECTION("absmax F32 with double quant") {
    copy.set(kBnbLayoutWeight + ".absmax", at::ones({160}, at::kFloat));
    require_read_error(copy, {kBnbLayoutWeight + ".absmax", "expected U8 [160]", "found F32"});
  }
  SECTION("absmax U8 without double quant") {
    copy.edit_state([](json& j) {
      j.erase("nested_blocksize");
      j.erase("nested_dtype");
      j.erase("nested_offset");
    });
    copy.erase(kBnbLayoutWeight + ".nested_absmax");
    copy.erase(kBnbLayoutWeight + ".nested_quant_map");
    require_read_error(copy, {kBnbLayoutWeight + ".absmax", "expected F32 [160]", "found U8"});
  }
  SECTION("nested tensors without nested keys") {
    copy.edit_state([](json& j) {
      j.erase("nested_blocksize");
      j.erase("nested_dtype");
      j.erase("nested_offset");
    });
    require_read_error(copy, {kBnbLayoutWeight + kBnbStateSuffix, "no \"nested_blocksize\""});
  }
  SECTION("nested keys without nested tensors") {
    copy.erase(kBnbLayoutWeight + ".nested_absmax");
    copy.erase(kBnbLayoutWeight + ".nested_quant_map");
    require_read_error(
        copy, {kBnbLayoutWeight + kBnbStateSuffix, kBnbLayoutWeight + ".nested_absmax", "missing"});
  }
  SECTION("nested_absmax missing") {
    copy.erase(kBnbLayoutWeight + ".nested_absmax");
    require_read_error(copy, {"missing tensor " + kBnbLayoutWeight + ".nested_absmax"});
  }
  SECTION("nested_absmax length disagrees with ceil(n_blocks / 256)") {
    copy.set(kBnbLayoutWeight + ".nested_absmax", at::ones({2}, at::kFloat));
    require_read_error(copy, {kBnbLayoutWeight + ".nested_absmax", "F32 [1]", "F32 [2]"});
  }
  SECTION("nested_absmax dtype") {
    copy.set(kBnbLayoutWeight + ".nested_absmax", at::ones({1}, at::kHalf));
    require_read_error(copy, {kBnbLayoutWeight + ".nested_absmax", "F32 [1]", "F16 [1]"});
  }
  SECTION("quant_map missing") {
    copy.erase(kBnbLayoutWeight + ".quant_map");
    require_read_error(copy, {"missing tensor " + kBnbLayoutWeight + ".quant_map"});
  }
  SECTION("quant_map size") {
    copy.set(kBnbLayoutWeight + ".quant_map", at::zeros({15}, at::kFloat));
    require_read_error(copy, {kBnbLayoutWeight + ".quant_map", "F32 [16]", "F32 [15]"});
  }
  SECTION("quant_map differs from the NF4 codebook") {
    at::Tensor map = copy.at(kBnbLayoutWeight + ".quant_map").clone();
    map[3] = -0.4f;
    copy.set(kBnbLayoutWeight + ".quant_map", map);
    require_read_error(
        copy, {kBnbLayoutWeight + ".quant_map", "entry 3", "-0.4", "NF4 codebook", "not nf4"});
  }
  SECTION("quant_map of fp4") {
    // bnb's FP4 table (a different format entirely).
    const float fp4[16] = {0, 0.0052,  0.6667,  1,  0.3333,  0.5,  0.1667,  0.25,
                           0, -0.0052, -0.6667, -1, -0.3333, -0.5, -0.1667, -0.25};
    copy.set(kBnbLayoutWeight + ".quant_map", at::from_blob(const_cast<float*>(fp4), {16}).clone());
    require_read_error(copy, {kBnbLayoutWeight + ".quant_map", "entry 0", "NF4 codebook"});
  }
  SECTION("nested_quant_map missing") {
    copy.erase(kBnbLayoutWeight + ".nested_quant_map");
    require_read_error(copy, {"missing tensor " + kBnbLayoutWeight + ".nested_quant_map"});
  }
  SECTION("nested_quant_map of a wrong size") {
    copy.set(kBnbLayoutWeight + ".nested_quant_map", at::zeros({255}, at::kFloat));
    require_read_error(copy, {kBnbLayoutWeight + ".nested_quant_map", "F32 [256]", "F32 [255]"});
  }
  SECTION("nested_quant_map differs from the dynamic map") {
    // Older bitsandbytes overwrote entry 0 with -1.0.
    at::Tensor map = copy.at(kBnbLayoutWeight + ".nested_quant_map").clone();
    map[0] = -1.0f;
    copy.set(kBnbLayoutWeight + ".nested_quant_map", map);
    require_read_error(copy, {kBnbLayoutWeight + ".nested_quant_map", "entry 0", "dynamic map",
                              "-0.99296874", "re-quantize"});
  }
  SECTION("nested_quant_map with NaN") {
    at::Tensor map = copy.at(kBnbLayoutWeight + ".nested_quant_map").clone();
    map[200] = std::numeric_limits<float>::quiet_NaN();
    copy.set(kBnbLayoutWeight + ".nested_quant_map", map);
    require_read_error(copy, {kBnbLayoutWeight + ".nested_quant_map", "entry 200"});
  }
}

TEST_CASE("bnb: the shipped tables are what the fixture stores", "[bnb]") {
  const auto ckpt = SafetensorsCheckpoint::open(kBnbFixtureDir);
  const std::string w = "model.layers.1.self_attn.k_proj.weight";
  const Tensors t = bnb_nf4_tensors(w, read_bnb_nf4(ckpt, w));
  CHECK(same_tensor(t[2].second, ckpt.tensor(w + ".quant_map")));
  CHECK(same_tensor(t[4].second, ckpt.tensor(w + ".nested_quant_map")));
}

TEST_CASE("bnb: quantization_config for config.json", "[bnb]") {
  const json fixture = read_json(kBnbFixtureDir / "config.json")["quantization_config"];
  CHECK(qlt::quant::bnb_quantization_config({64, true}, "float32") == fixture);
  CHECK(qlt::quant::bnb_quantization_config({64, true}, "float32").dump(2) == fixture.dump(2));

  json expected = fixture;
  expected["bnb_4bit_use_double_quant"] = false;
  expected["bnb_4bit_compute_dtype"] = "bfloat16";
  CHECK(qlt::quant::bnb_quantization_config({128, false}, "bfloat16") == expected);

  require_user_error([] { qlt::quant::bnb_quantization_config({}, "fp32"); },
                     {"bnb_4bit_compute_dtype", "\"fp32\"", "float32"});
}

}  // namespace
