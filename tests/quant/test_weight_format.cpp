// The weight-format table (quant/weight_format.h): config names, options, and the operations
// every format provides, checked the same way for each row.
#include <fmt/format.h>

#include <catch2/catch.hpp>

#include "core/config.h"
#include "core/config_schema.h"
#include "core/errors.h"
#include "quant/weight_format.h"

namespace {

using Catch::Matchers::Contains;
using qlt::quant::WeightFormat;

qlt::QuantizationConfig quantization(const std::string& type) {
  qlt::QuantizationConfig c;
  c.type = type;
  return c;
}

}  // namespace

TEST_CASE("the config's quantization.type choices are the format table's names",
          "[weight_format]") {
  std::vector<std::string> table;
  for (auto name : qlt::quant::weight_format_names()) table.emplace_back(name);
  const qlt::ConfigKey* key = nullptr;
  for (const auto& k : qlt::config_keys())
    if (k.path == "quantization.type") key = &k;
  REQUIRE(key != nullptr);
  CHECK(key->choices == table);
}

TEST_CASE("weight_format converts the quantization section once, checking its options",
          "[weight_format]") {
  CHECK(std::holds_alternative<qlt::quant::DenseFormat>(
      qlt::quant::weight_format(quantization("none"))));
  auto nf4 = quantization("nf4");
  nf4.block_size = 128;
  nf4.double_quant = false;
  const auto f = qlt::quant::weight_format(nf4);
  REQUIRE(std::holds_alternative<qlt::quant::Nf4Options>(f));
  CHECK(std::get<qlt::quant::Nf4Options>(f).block_size == 128);
  CHECK_FALSE(std::get<qlt::quant::Nf4Options>(f).double_quant);
  auto int4 = quantization("int4");
  int4.group_size = 64;
  CHECK(std::get<qlt::quant::Int4Options>(qlt::quant::weight_format(int4)).group_size == 64);
  CHECK(qlt::quant::describe(qlt::quant::weight_format(quantization("int4"))) ==
        "INT4 (group 32 = GGUF Q4_1)");

  int4.group_size = 48;
  REQUIRE_THROWS_AS(qlt::quant::weight_format(int4), qlt::UserError);
  REQUIRE_THROWS_WITH(qlt::quant::weight_format(int4), Contains("quantization.group_size"));
  nf4.block_size = 96;
  REQUIRE_THROWS_WITH(qlt::quant::weight_format(nf4), Contains("quantization.block_size"));
  REQUIRE_THROWS_WITH(qlt::quant::weight_format(quantization("int3")),
                      Contains("int3") && Contains("\"int4\""));
}

TEST_CASE("every format: store, shape, bytes, dequantize, matches, permute rows",
          "[weight_format]") {
  at::manual_seed(3);
  const auto w = at::randn({48, 128});
  const std::pair<WeightFormat, double> rows[] = {
      {qlt::quant::DenseFormat{}, 0.0},
      {qlt::quant::Nf4Options{64, true}, 0.12},
      {qlt::quant::Int4Options{32}, 0.12},
      {qlt::quant::Int4Options{128}, 0.2},
  };
  for (const auto& [format, tolerance] : rows) {
    DYNAMIC_SECTION(qlt::quant::describe(format)) {
      const auto stored = qlt::quant::store_weight(w, format, at::kFloat, "w");
      CHECK(qlt::quant::matches(stored, format));
      CHECK(qlt::quant::is_quantized(stored) == qlt::quant::is_quantized(format));
      CHECK(qlt::quant::stored_shape(stored) == std::vector<int64_t>{48, 128});
      CHECK(qlt::quant::describe(stored).find(qlt::quant::describe(format)) != std::string::npos);
      const int64_t bytes = qlt::quant::storage_bytes(stored);
      if (qlt::quant::is_quantized(format)) CHECK(bytes < w.numel());  // about 4-5 bits a weight
      const auto deq = qlt::quant::dequantize(stored, at::kFloat);
      const double rel = ((deq - w).norm() / w.norm()).item<double>();
      CHECK(rel <= tolerance);
      at::Tensor into = at::empty({48, 128});
      qlt::quant::dequantize_into(stored, into);
      CHECK(at::equal(into, deq));
      if (!std::holds_alternative<qlt::quant::Nf4Options>(format)) {
        const auto rows_perm = at::randperm(48, at::kLong);
        const auto permuted = qlt::quant::permute_rows(stored, rows_perm);
        CHECK(at::equal(qlt::quant::dequantize(permuted, at::kFloat),
                        deq.index_select(0, rows_perm)));
      }
      const auto moved = qlt::quant::to_device(stored, at::kCPU);
      CHECK(at::equal(qlt::quant::dequantize(moved, at::kFloat), deq));
    }
  }
  // A stored weight matches only its own kind and options.
  const auto nf4 = qlt::quant::store_weight(w, qlt::quant::Nf4Options{64, true}, at::kFloat, "w");
  CHECK_FALSE(qlt::quant::matches(nf4, qlt::quant::Nf4Options{64, false}));
  CHECK_FALSE(qlt::quant::matches(nf4, qlt::quant::Int4Options{32}));
  CHECK_FALSE(qlt::quant::matches(w, qlt::quant::Int4Options{32}));
}

TEST_CASE("a weight the format cannot hold is a UserError naming the tensor", "[weight_format]") {
  REQUIRE_THROWS_WITH(qlt::quant::store_weight(at::randn({4, 40}), qlt::quant::Int4Options{32},
                                               at::kFloat, "model.layers.0.mlp.up_proj.weight"),
                      Contains("model.layers.0.mlp.up_proj.weight"));
}
