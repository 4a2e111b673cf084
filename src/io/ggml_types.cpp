// The ggml type table. Block sizes from src/ggml.c type_traits (blck_size) and the sizeof of
// the block structs in src/ggml-common.h of ggml d99724f (measured by compiling the header);
// names as the `gguf` package's GGMLQuantizationType spells them. See ggml_types.h.
#include "io/ggml_types.h"

#include <fmt/format.h>

namespace qlt::io {
namespace {

constexpr int64_t kQK = 256;  // QK_K: elements of one super-block of the K- and IQ- types

constexpr GgmlTypeTraits kTypes[] = {
    {GgmlType::F32, "F32", 1, 4},
    {GgmlType::F16, "F16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", 32, 18},    // f16 d; u8 qs[16]
    {GgmlType::Q4_1, "Q4_1", 32, 20},    // f16 d, m; u8 qs[16]
    {GgmlType::Q5_0, "Q5_0", 32, 22},    // f16 d; u8 qh[4]; u8 qs[16]
    {GgmlType::Q5_1, "Q5_1", 32, 24},    // f16 d, m; u8 qh[4]; u8 qs[16]
    {GgmlType::Q8_0, "Q8_0", 32, 34},    // f16 d; i8 qs[32]
    {GgmlType::Q8_1, "Q8_1", 32, 36},    // f16 d, s; i8 qs[32]
    {GgmlType::Q2_K, "Q2_K", kQK, 84},   // u8 scales[16]; u8 qs[64]; f16 d, dmin
    {GgmlType::Q3_K, "Q3_K", kQK, 110},  // u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d
    {GgmlType::Q4_K, "Q4_K", kQK, 144},  // f16 d, dmin; u8 scales[12]; u8 qs[128]
    {GgmlType::Q5_K, "Q5_K", kQK, 176},  // f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
    {GgmlType::Q6_K, "Q6_K", kQK, 210},  // u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
    {GgmlType::Q8_K, "Q8_K", kQK, 292},  // f32 d; i8 qs[256]; i16 bsums[16]
    {GgmlType::IQ2_XXS, "IQ2_XXS", kQK, 66},
    {GgmlType::IQ2_XS, "IQ2_XS", kQK, 74},
    {GgmlType::IQ3_XXS, "IQ3_XXS", kQK, 98},
    {GgmlType::IQ1_S, "IQ1_S", kQK, 50},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18},
    {GgmlType::IQ3_S, "IQ3_S", kQK, 110},
    {GgmlType::IQ2_S, "IQ2_S", kQK, 82},
    {GgmlType::IQ4_XS, "IQ4_XS", kQK, 136},
    {GgmlType::I8, "I8", 1, 1},
    {GgmlType::I16, "I16", 1, 2},
    {GgmlType::I32, "I32", 1, 4},
    {GgmlType::I64, "I64", 1, 8},
    {GgmlType::F64, "F64", 1, 8},
    {GgmlType::IQ1_M, "IQ1_M", kQK, 56},
    {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::TQ1_0, "TQ1_0", kQK, 54},
    {GgmlType::TQ2_0, "TQ2_0", kQK, 66},
    {GgmlType::MXFP4, "MXFP4", 32, 17},  // u8 e (E8M0 scale); u8 qs[16]
    {GgmlType::NVFP4, "NVFP4", 64, 36},  // 4 x (E4M3 scale; 8 bytes of FP4)
    {GgmlType::Q1_0, "Q1_0", 128, 18},   // f16 d; u8 qs[16]
    {GgmlType::Q2_0, "Q2_0", 64, 18},    // f16 d; u8 qs[16]
};

struct Removed {
  uint32_t id;
  std::string_view name;
};
// ggml.h comments: "support has been removed" (4, 5) and "removed from gguf files" (31-33,
// 36-38; ggml now repacks Q4_0 / IQ4_NL at load time instead).
constexpr Removed kRemoved[] = {{4, "Q4_2"},        {5, "Q4_3"},       {31, "Q4_0_4_4"},
                                {32, "Q4_0_4_8"},   {33, "Q4_0_8_8"},  {36, "IQ4_NL_4_4"},
                                {37, "IQ4_NL_4_8"}, {38, "IQ4_NL_8_8"}};

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t type_id) {
  for (const auto& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == type_id) return t;
  }
  return std::nullopt;
}

GgmlTypeTraits ggml_type_traits(GgmlType type) {
  // Every enumerator has a row (test_gguf.cpp checks), so this cannot fail.
  return *ggml_type_traits(static_cast<uint32_t>(type));
}

std::string ggml_type_name(uint32_t type_id) {
  if (const auto t = ggml_type_traits(type_id)) return std::string(t->name);
  return fmt::format("type {}", type_id);
}

std::optional<std::string_view> ggml_removed_type_name(uint32_t type_id) {
  for (const auto& r : kRemoved) {
    if (r.id == type_id) return r.name;
  }
  return std::nullopt;
}

}  // namespace qlt::io
