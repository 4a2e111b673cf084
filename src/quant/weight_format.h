// THE weight-format table: how a frozen linear weight is stored, and the few operations the
// rest of the program needs on any stored weight (shape, bytes, device move, dequantize,
// quantize from full precision). model/, adapters/, train/, cli/ and export/ use only this
// header; no other file names a format by string.
//
// Adding a format: its own file (a struct with `shape`, `dtype`, `storage_bytes()`,
// `to(device)`; quantize / dequantize_into functions; CPU reference + CUDA kernel), then one
// row here: an alternative in StoredWeight and WeightFormat, and a row in weight_format.cpp's
// kFormats (config name, options from QuantizationConfig, quantize, dequantize_into).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/config.h"
#include "quant/int4.h"
#include "quant/nf4.h"

namespace qlt::quant {

// A weight kept in the compute dtype (quantization.type "none").
struct DenseFormat {};

// How full-precision weights are to be stored (from the config's quantization section).
using WeightFormat = std::variant<DenseFormat, Nf4Options, Int4Options>;

// A stored frozen weight, logical shape [out, in]: dense (a tensor in the compute dtype),
// NF4 (bitsandbytes layout) or INT4 groups (GGUF Q4_1 blocks for group 32).
using StoredWeight = std::variant<at::Tensor, Nf4Tensor, Int4Tensor>;

// The config names of the formats, in table order ("none", "nf4", "int4").
std::vector<std::string_view> weight_format_names();

// The one conversion from the config: looks quantization.type up in the format table and
// checks that format's options (block size, group size), naming the JSON key on error.
WeightFormat weight_format(const QuantizationConfig& config);

// "dense", "NF4 (block 64, double quant)", "INT4 (group 32 = GGUF Q4_1)".
std::string describe(const WeightFormat& format);
std::string describe(const StoredWeight& weight);  // the same words, for what is stored

bool is_quantized(const WeightFormat& format);
bool is_quantized(const StoredWeight& weight);
// True when `weight` is already stored the way `format` asks (same kind and options), so it
// can be used as stored (e.g. a GGUF Q4_1 tensor under INT4 group 32).
bool matches(const StoredWeight& weight, const WeightFormat& format);

std::vector<int64_t> stored_shape(const StoredWeight& weight);
int64_t storage_bytes(const StoredWeight& weight);
at::Device stored_device(const StoredWeight& weight);
StoredWeight to_device(const StoredWeight& weight, at::Device device);

// Stores a full-precision weight [out, in] (bf16/fp16/fp32, on the device where the work
// should happen) in `format`; dense weights are cast to `dense_dtype`. A weight the format
// cannot hold (e.g. in not a multiple of the INT4 group) is a UserError naming `tensor_name`.
StoredWeight store_weight(const at::Tensor& weight, const WeightFormat& format,
                          at::ScalarType dense_dtype, std::string_view tensor_name);

// The weight as a dense [out, in] tensor in `dtype` (a new tensor for quantized formats).
at::Tensor dequantize(const StoredWeight& weight, at::ScalarType dtype);
// Dequantizes into `out` ([out, in], contiguous, fp32/bf16/fp16, on the weight's device).
void dequantize_into(const StoredWeight& weight, at::Tensor& out);

// Rows of a stored weight picked by `rows` [out] int64 (a permutation of 0..out-1): used to
// undo llama.cpp's q/k row order on weights kept as stored. Dense and INT4 permute their
// rows (INT4 groups lie within a row); NF4 (flat blocks) is refused (internal error).
StoredWeight permute_rows(const StoredWeight& weight, const at::Tensor& rows);

}  // namespace qlt::quant
