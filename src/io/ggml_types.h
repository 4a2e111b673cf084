// GGML tensor types as GGUF stores them: the type ids of ggml.h (enum ggml_type) and, for each,
// how many elements one block holds and how many bytes it takes. The GGUF reader uses the
// table to bounds-check tensor sizes; quant/ggml_dequantize.h decodes the blocks.
// Source: include/ggml.h (enum ggml_type), src/ggml.c (type_traits: blck_size, type_size) and
// src/ggml-common.h (the block structs) of github.com/ggml-org/ggml at d99724f (2026-08-21);
// the `gguf` Python package 0.19.0's GGML_QUANT_SIZES agrees on every id it knows (it lacks
// Q2_0 = 42) except Q8_1: 40 bytes there, 36 in ggml (f16 d, f16 s, i8 qs[32];
// static_assert in ggml-common.h). ggml reads the files, so 36 it is; Q8_1 is an internal
// type of ggml's matrix products that no converter writes. tests/io/test_gguf.cpp pins the
// table against tests/fixtures/gguf/expected.json (the package's table).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qlt::io {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  // 4 and 5 (Q4_2, Q4_3) were removed from ggml
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  // 31-33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) and 36-38 were removed from ggml
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
  Q2_0 = 42,
};

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;   // "F32", "Q4_K", ... as ggml and the gguf package spell it
  int64_t block_elements;  // elements per block (1 for F32/F16/BF16/I*)
  int64_t block_bytes;     // bytes per block
};

// The traits of a type id read from a file; nullopt for an id ggml does not define (or no
// longer defines). Every defined id is listed, including ones qlora-train cannot decode, so
// that the reader can still check sizes and name the type in an error.
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type_id);
// The same for a GgmlType value (always defined for the enumerators above).
GgmlTypeTraits ggml_type_traits(GgmlType type);
// "F32", "Q4_K", ...; "type 31" for an id that is not in the table.
std::string ggml_type_name(uint32_t type_id);
// For an id ggml used to define and removed ("Q4_2", "Q4_0_4_4", ...): its old name, so an
// error can say why; nullopt otherwise.
std::optional<std::string_view> ggml_removed_type_name(uint32_t type_id);

}  // namespace qlt::io
