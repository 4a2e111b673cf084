#include "quant/weight_format.h"

#include <fmt/format.h>

#include <array>

#include "core/errors.h"

namespace qlt::quant {
namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// THE table of formats by their config name (quantization.type). The config layer lists the
// same names in its one_of (core/config.cpp); test_weight_format checks that both agree.
struct FormatRow {
  std::string_view name;
  WeightFormat (*from_config)(const QuantizationConfig& config);
};

constexpr std::array<FormatRow, 3> kFormats = {{
    {"none", [](const QuantizationConfig&) -> WeightFormat { return DenseFormat{}; }},
    {"nf4",
     [](const QuantizationConfig& c) -> WeightFormat {
       check_nf4_block_size(c.block_size, "quantization.block_size");
       return Nf4Options{c.block_size, c.double_quant};
     }},
    {"int4",
     [](const QuantizationConfig& c) -> WeightFormat {
       check_int4_group_size(c.group_size, "quantization.group_size");
       return Int4Options{c.group_size};
     }},
}};

}  // namespace

std::vector<std::string_view> weight_format_names() {
  std::vector<std::string_view> names;
  for (const auto& row : kFormats) names.push_back(row.name);
  return names;
}

WeightFormat weight_format(const QuantizationConfig& config) {
  for (const auto& row : kFormats)
    if (row.name == config.type) return row.from_config(config);
  std::string names;
  for (const auto& row : kFormats)
    names += fmt::format("{}\"{}\"", names.empty() ? "" : ", ", row.name);
  user_error("quantization.type: unknown format \"{}\"; choose one of {}", config.type, names);
}

std::string describe(const WeightFormat& format) {
  return std::visit(Overloaded{
                        [](const DenseFormat&) -> std::string { return "dense"; },
                        [](const Nf4Options& o) {
                          return fmt::format("NF4 (block {}{})", o.block_size,
                                             o.double_quant ? ", double quant" : "");
                        },
                        [](const Int4Options& o) {
                          return fmt::format("INT4 (group {}{})", o.group_size,
                                             o.group_size == 32 ? " = GGUF Q4_1" : "");
                        },
                    },
                    format);
}

std::string describe(const StoredWeight& weight) {
  return std::visit(
      Overloaded{
          [](const at::Tensor& t) {
            return fmt::format("dense {}", c10::toString(t.scalar_type()));
          },
          [](const Nf4Tensor& q) {
            return describe(WeightFormat{Nf4Options{q.block_size, q.double_quant()}});
          },
          [](const Int4Tensor& q) { return describe(WeightFormat{Int4Options{q.group_size}}); },
      },
      weight);
}

bool is_quantized(const WeightFormat& format) {
  return !std::holds_alternative<DenseFormat>(format);
}
bool is_quantized(const StoredWeight& weight) {
  return !std::holds_alternative<at::Tensor>(weight);
}

bool matches(const StoredWeight& weight, const WeightFormat& format) {
  return std::visit(
      Overloaded{
          [](const at::Tensor&, const DenseFormat&) { return true; },
          [](const Nf4Tensor& q, const Nf4Options& o) {
            return q.block_size == o.block_size && q.double_quant() == o.double_quant;
          },
          [](const Int4Tensor& q, const Int4Options& o) { return q.group_size == o.group_size; },
          [](const auto&, const auto&) { return false; },
      },
      weight, format);
}

std::vector<int64_t> stored_shape(const StoredWeight& weight) {
  return std::visit(Overloaded{
                        [](const at::Tensor& t) { return t.sizes().vec(); },
                        [](const auto& q) { return q.shape; },
                    },
                    weight);
}

int64_t storage_bytes(const StoredWeight& weight) {
  return std::visit(Overloaded{
                        [](const at::Tensor& t) { return static_cast<int64_t>(t.nbytes()); },
                        [](const auto& q) { return q.storage_bytes(); },
                    },
                    weight);
}

at::Device stored_device(const StoredWeight& weight) {
  return std::visit(Overloaded{
                        [](const at::Tensor& t) { return t.device(); },
                        [](const auto& q) { return q.device(); },
                    },
                    weight);
}

StoredWeight to_device(const StoredWeight& weight, at::Device device) {
  return std::visit(Overloaded{
                        [&](const at::Tensor& t) -> StoredWeight { return t.to(device); },
                        [&](const auto& q) -> StoredWeight { return q.to(device); },
                    },
                    weight);
}

StoredWeight store_weight(const at::Tensor& weight, const WeightFormat& format,
                          at::ScalarType dense_dtype, std::string_view tensor_name) {
  return std::visit(
      Overloaded{
          [&](const DenseFormat&) -> StoredWeight { return weight.to(dense_dtype); },
          [&](const Nf4Options& o) -> StoredWeight { return quantize_nf4(weight, o, tensor_name); },
          [&](const Int4Options& o) -> StoredWeight {
            return quantize_int4(weight, o, tensor_name);
          },
      },
      format);
}

at::Tensor dequantize(const StoredWeight& weight, at::ScalarType dtype) {
  return std::visit(Overloaded{
                        [&](const at::Tensor& t) { return t.to(dtype); },
                        [&](const Nf4Tensor& q) { return dequantize_nf4(q, dtype); },
                        [&](const Int4Tensor& q) { return dequantize_int4(q, dtype); },
                    },
                    weight);
}

void dequantize_into(const StoredWeight& weight, at::Tensor& out) {
  std::visit(Overloaded{
                 [&](const at::Tensor& t) { out.copy_(t); },
                 [&](const Nf4Tensor& q) { dequantize_nf4_into(q, out); },
                 [&](const Int4Tensor& q) { dequantize_int4_into(q, out); },
             },
             weight);
}

StoredWeight permute_rows(const StoredWeight& weight, const at::Tensor& rows) {
  return std::visit(Overloaded{
                        [&](const at::Tensor& t) -> StoredWeight {
                          return t.index_select(0, rows.to(t.device()));
                        },
                        [&](const Int4Tensor& q) -> StoredWeight {
                          Int4Tensor out = q;
                          out.blocks = q.blocks.index_select(0, rows.to(q.device())).contiguous();
                          return out;
                        },
                        [&](const Nf4Tensor&) -> StoredWeight {
                          TORCH_CHECK(
                              false,
                              "permute_rows: NF4 blocks run across rows; dequantize, permute "
                              "and quantize instead");
                        },
                    },
                    weight);
}

}  // namespace qlt::quant
