// bitsandbytes' 4-bit NF4 safetensors layout, as transformers saves a `load_in_4bit` model
// (METHODS.md §3; every byte checked against tests/fixtures/bnb_llama_gqa, see
// tests/fixtures/README.md "NF4 / bitsandbytes fixtures").
//
// For a quantized linear `X` with weight name `W = X.weight`:
//   W                                   U8  [(n+1)/2, 1]   two NF4 codes per byte
//   W.absmax                            U8  [n_blocks]     (F32 without double quant)
//   W.quant_map                         F32 [16]           the NF4 codebook
//   W.nested_absmax                     F32 [ceil(n_blocks/256)]   double quant only
//   W.nested_quant_map                  F32 [256]          the dynamic map; double quant only
//   W.quant_state.bitsandbytes__nf4     U8  [bytes]        UTF-8 json.dumps of
//     {"quant_type", "blocksize", "dtype", "shape"[, "nested_blocksize", "nested_dtype",
//      "nested_offset"]} in that order (bnb's QuantState.as_dict(packed=True)).
//
// Policy: only what our Nf4Tensor represents exactly is accepted. A quant_map other than
// the NF4 codebook or a nested_quant_map other than bnb's dynamic map would decode to
// different weights with our kernels (which use the built-in tables), so such a file is
// refused with a UserError rather than loaded approximately. Same for fp4, non-uint8
// quant storage and nested_blocksize != 256 (bnb never writes those for nf4 weights).
#pragma once

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "quant/nf4.h"

namespace qlt::quant {

// Suffix of the packed quant-state tensor, appended to the weight name after a dot.
inline constexpr const char* kBnbNf4QuantStateKey = "quant_state.bitsandbytes__nf4";
inline constexpr const char* kBnbFp4QuantStateKey = "quant_state.bitsandbytes__fp4";

// True when `<weight_name>.quant_state.bitsandbytes__nf4` is in the checkpoint.
bool is_bnb_nf4_module(const io::SafetensorsCheckpoint& checkpoint, const std::string& weight_name);

// Every name a bitsandbytes 4-bit weight may add next to `<weight_name>` (absmax, quant_map,
// nested_*, the nf4 and fp4 quant states), whichever of them a checkpoint holds.
std::vector<std::string> bnb_4bit_companion_names(const std::string& weight_name);

// True when the checkpoint holds any companion of `weight_name`: the weight claims the
// bitsandbytes 4-bit layout, and read_bnb_nf4 must then succeed (or name what is wrong).
bool claims_bnb_4bit_layout(const io::SafetensorsCheckpoint& checkpoint,
                            const std::string& weight_name);

// Reads the NF4 weight `weight_name` (e.g. "model.layers.0.self_attn.q_proj.weight") and
// validates it; every problem is a UserError naming the tensor. The tensors are CPU tensors
// (sharing the checkpoint's mapping where possible). offset = nested_offset as fp32, dtype,
// shape and block size from the quant-state JSON.
Nf4Tensor read_bnb_nf4(const io::SafetensorsCheckpoint& checkpoint, const std::string& weight_name);

// The names of bnb_nf4_tensors' entries, in its order (known before the weight is quantized: a
// streaming writer reserves its header from them).
std::vector<std::string> bnb_nf4_tensor_names(const std::string& weight_name, bool double_quant);

// The entries transformers writes for `q` under `weight_name`, in bnb's state-dict order:
// weight, absmax, quant_map, [nested_absmax, nested_quant_map,] quant_state (6 with double
// quant, 4 without). All CPU tensors. The JSON's "dtype" is `dtype_name` ("float32",
// "bfloat16" or "float16"; UserError otherwise), or q.dtype's name when empty.
std::vector<std::pair<std::string, at::Tensor>> bnb_nf4_tensors(const std::string& weight_name,
                                                                const Nf4Tensor& q,
                                                                const std::string& dtype_name = "");

// The quant-state JSON text exactly as bnb writes it (Python json.dumps: ", " and ": "
// separators, floats as Python repr of the fp32 value widened to double).
std::string bnb_nf4_quant_state_json(const Nf4Tensor& q, const std::string& dtype_name);

// Python's repr() of a double: shortest round-trip digits; exponent form when the decimal
// exponent is < -4 or >= 16 ("1e-05", "1e+16"), else fixed with at least one fractional
// digit ("0.0001", "3.0"); "inf", "-inf", "nan". (json.dumps writes the non-finite ones as
// Infinity / -Infinity / NaN; the quant-state writer does the same.)
std::string python_float_repr(double value);

// The "quantization_config" block transformers writes into config.json for
// BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", ...) with
// bnb_4bit_use_double_quant = options.double_quant. compute_dtype: "float32", "bfloat16" or
// "float16" (UserError otherwise). The block size is not part of this config: loaders take
// it from each weight's quant state.
nlohmann::json bnb_quantization_config(const Nf4Options& options, const std::string& compute_dtype);

// "float32" / "bfloat16" / "float16" <-> the scalar type; UserError naming `what` otherwise.
at::ScalarType bnb_dtype_from_name(const std::string& name, const std::string& what);
std::string bnb_dtype_name(at::ScalarType type);

}  // namespace qlt::quant
