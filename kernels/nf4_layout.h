// NF4 + double-quantization layout and constants, shared by host code (src/quant) and the
// CUDA kernels (kernels/). Plain C++: no LibTorch, no CUDA headers.
//
// Semantics are bitsandbytes 0.50.2 on the CPU (the reference we are byte-identical to), as
// established by scripts/fixtures/make_nf4_fixtures.py; see tests/fixtures/README.md:
//   - blocks of block_size over the FLATTENED tensor (a block may cross rows);
//   - absmax per block in fp32; codes by the number of codebook midpoints strictly below the
//     normalized value (a value on a midpoint takes the LOWER code);
//   - two codes per byte, the first element in the HIGH nibble;
//   - double quant: offset = mean(absmax), absmax - offset quantized in blocks of 256 with the
//     signed 8-bit dynamic map through a 65536-entry lookup table.
// Device code must not index these host arrays directly: copy them to __constant__ memory.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define QLT_HOST_DEVICE __host__ __device__
#else
#define QLT_HOST_DEVICE
#endif

namespace qlt::nf4 {

inline constexpr int kNumCodes = 16;
inline constexpr int kDefaultBlockSize = 64;
inline constexpr int kMinBlockSize = 32;  // bitsandbytes accepts powers of two 32..4096
inline constexpr int kMaxBlockSize = 4096;
inline constexpr int kNestedBlockSize = 256;  // double quant: absmax values per nested block
inline constexpr int kDynamicMapSize = 256;
inline constexpr int kNestedLutSize = 65536;
inline constexpr float kMinAbsmax = 1e-38f;  // bnb clamps a block's absmax to this

// The NF4 codebook (QLoRA, arXiv 2305.14314), index 0..15, as bitsandbytes' quant_map.
inline constexpr float kCodebook[kNumCodes] = {
    -0x1p+0f,        -0x1.647362p-1f, -0x1.0cd66p-1f,  -0x1.94654p-2f,
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0x0p+0f,
    0x1.45f5fep-4f,  0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
    0x1.c3497p-2f,   0x1.200f56p-1f,  0x1.722766p-1f,  0x1p+0f,
};

// bitsandbytes' create_dynamic_map(signed=True) in fp32, as bnb 0.50.2 stores
// nested_quant_map (index 0 is -0.99296874, not -1; 127 is 0; 255 is 1). Dumped from bnb,
// checked bit for bit against tests/fixtures/nf4 by tests/quant/test_nf4_bnb.cpp.
inline constexpr float kDynamicMap[kDynamicMapSize] = {
    -0x1.fc6666p-1f,  -0x1.f53334p-1f,  -0x1.eep-1f,      -0x1.e6ccccp-1f,  -0x1.df999ap-1f,
    -0x1.d86666p-1f,  -0x1.d13334p-1f,  -0x1.cap-1f,      -0x1.c2ccccp-1f,  -0x1.bb999ap-1f,
    -0x1.b46666p-1f,  -0x1.ad3334p-1f,  -0x1.a6p-1f,      -0x1.9eccccp-1f,  -0x1.97999ap-1f,
    -0x1.906666p-1f,  -0x1.893334p-1f,  -0x1.82p-1f,      -0x1.7accccp-1f,  -0x1.73999ap-1f,
    -0x1.6c6668p-1f,  -0x1.653334p-1f,  -0x1.5ep-1f,      -0x1.56ccccp-1f,  -0x1.4f999ap-1f,
    -0x1.486668p-1f,  -0x1.413334p-1f,  -0x1.3ap-1f,      -0x1.32ccccp-1f,  -0x1.2b999ap-1f,
    -0x1.246668p-1f,  -0x1.1d3334p-1f,  -0x1.16p-1f,      -0x1.0eccccp-1f,  -0x1.079998p-1f,
    -0x1.006666p-1f,  -0x1.f26664p-2f,  -0x1.e4p-2f,      -0x1.d59998p-2f,  -0x1.c73334p-2f,
    -0x1.b8ccccp-2f,  -0x1.aa6666p-2f,  -0x1.9cp-2f,      -0x1.8d9998p-2f,  -0x1.7f3334p-2f,
    -0x1.70ccccp-2f,  -0x1.626666p-2f,  -0x1.54p-2f,      -0x1.459998p-2f,  -0x1.373334p-2f,
    -0x1.28ccccp-2f,  -0x1.1a6668p-2f,  -0x1.0cp-2f,      -0x1.fb3332p-3f,  -0x1.de6666p-3f,
    -0x1.c1999ap-3f,  -0x1.a4ccccp-3f,  -0x1.88p-3f,      -0x1.6b3334p-3f,  -0x1.4e6666p-3f,
    -0x1.31999ap-3f,  -0x1.14ccccp-3f,  -0x1.fp-4f,       -0x1.b66668p-4f,  -0x1.93d70ap-4f,
    -0x1.8851eep-4f,  -0x1.7ccccep-4f,  -0x1.7147aep-4f,  -0x1.65c29p-4f,   -0x1.5a3d7p-4f,
    -0x1.4eb854p-4f,  -0x1.433334p-4f,  -0x1.37ae14p-4f,  -0x1.2c28f6p-4f,  -0x1.20a3d6p-4f,
    -0x1.151ebap-4f,  -0x1.09999ap-4f,  -0x1.fc28f6p-5f,  -0x1.e51ebap-5f,  -0x1.ce147ap-5f,
    -0x1.b70a3ep-5f,  -0x1.ap-5f,       -0x1.88f5c2p-5f,  -0x1.71eb86p-5f,  -0x1.5ae146p-5f,
    -0x1.43d70ap-5f,  -0x1.2ccccep-5f,  -0x1.15c29p-5f,   -0x1.fd70a4p-6f,  -0x1.cf5c2ap-6f,
    -0x1.a147aep-6f,  -0x1.733334p-6f,  -0x1.451ebap-6f,  -0x1.170a3ep-6f,  -0x1.d1eb86p-7f,
    -0x1.75c29p-7f,   -0x1.3e76c8p-7f,  -0x1.2c083p-7f,   -0x1.19999ap-7f,  -0x1.072b02p-7f,
    -0x1.e978d4p-8f,  -0x1.c49ba6p-8f,  -0x1.9fbe76p-8f,  -0x1.7ae148p-8f,  -0x1.56041ap-8f,
    -0x1.3126e8p-8f,  -0x1.0c49bap-8f,  -0x1.ced914p-9f,  -0x1.851eb8p-9f,  -0x1.3b645ap-9f,
    -0x1.e353f8p-10f, -0x1.4fdf3ap-10f, -0x1.eecbfep-11f, -0x1.b3d07cp-11f, -0x1.78d5p-11f,
    -0x1.3dd982p-11f, -0x1.02de02p-11f, -0x1.8fc506p-12f, -0x1.19ce0ap-12f, -0x1.47ae16p-13f,
    -0x1.743e96p-14f, -0x1.15df66p-14f, -0x1.6f0068p-15f, -0x1.64840cp-16f, -0x1.040bfep-17f,
    -0x1.b43528p-19f, -0x1.27476ep-21f, 0x0p+0f,          0x1.27476ep-21f,  0x1.b43528p-19f,
    0x1.040bfep-17f,  0x1.64840cp-16f,  0x1.6f0068p-15f,  0x1.15df66p-14f,  0x1.743e96p-14f,
    0x1.47ae16p-13f,  0x1.19ce0ap-12f,  0x1.8fc506p-12f,  0x1.02de02p-11f,  0x1.3dd982p-11f,
    0x1.78d5p-11f,    0x1.b3d07cp-11f,  0x1.eecbfep-11f,  0x1.4fdf3ap-10f,  0x1.e353f8p-10f,
    0x1.3b645ap-9f,   0x1.851eb8p-9f,   0x1.ced914p-9f,   0x1.0c49bap-8f,   0x1.3126e8p-8f,
    0x1.56041ap-8f,   0x1.7ae148p-8f,   0x1.9fbe76p-8f,   0x1.c49ba6p-8f,   0x1.e978d4p-8f,
    0x1.072b02p-7f,   0x1.19999ap-7f,   0x1.2c083p-7f,    0x1.3e76c8p-7f,   0x1.75c29p-7f,
    0x1.d1eb86p-7f,   0x1.170a3ep-6f,   0x1.451ebap-6f,   0x1.733334p-6f,   0x1.a147aep-6f,
    0x1.cf5c2ap-6f,   0x1.fd70a4p-6f,   0x1.15c29p-5f,    0x1.2ccccep-5f,   0x1.43d70ap-5f,
    0x1.5ae146p-5f,   0x1.71eb86p-5f,   0x1.88f5c2p-5f,   0x1.ap-5f,        0x1.b70a3ep-5f,
    0x1.ce147ap-5f,   0x1.e51ebap-5f,   0x1.fc28f6p-5f,   0x1.09999ap-4f,   0x1.151ebap-4f,
    0x1.20a3d6p-4f,   0x1.2c28f6p-4f,   0x1.37ae14p-4f,   0x1.433334p-4f,   0x1.4eb854p-4f,
    0x1.5a3d7p-4f,    0x1.65c29p-4f,    0x1.7147aep-4f,   0x1.7ccccep-4f,   0x1.8851eep-4f,
    0x1.93d70ap-4f,   0x1.b66668p-4f,   0x1.fp-4f,        0x1.14ccccp-3f,   0x1.31999ap-3f,
    0x1.4e6666p-3f,   0x1.6b3334p-3f,   0x1.88p-3f,       0x1.a4ccccp-3f,   0x1.c1999ap-3f,
    0x1.de6666p-3f,   0x1.fb3332p-3f,   0x1.0cp-2f,       0x1.1a6668p-2f,   0x1.28ccccp-2f,
    0x1.373334p-2f,   0x1.459998p-2f,   0x1.54p-2f,       0x1.626666p-2f,   0x1.70ccccp-2f,
    0x1.7f3334p-2f,   0x1.8d9998p-2f,   0x1.9cp-2f,       0x1.aa6666p-2f,   0x1.b8ccccp-2f,
    0x1.c73334p-2f,   0x1.d59998p-2f,   0x1.e4p-2f,       0x1.f26664p-2f,   0x1.006666p-1f,
    0x1.079998p-1f,   0x1.0eccccp-1f,   0x1.16p-1f,       0x1.1d3334p-1f,   0x1.246668p-1f,
    0x1.2b999ap-1f,   0x1.32ccccp-1f,   0x1.3ap-1f,       0x1.413334p-1f,   0x1.486668p-1f,
    0x1.4f999ap-1f,   0x1.56ccccp-1f,   0x1.5ep-1f,       0x1.653334p-1f,   0x1.6c6668p-1f,
    0x1.73999ap-1f,   0x1.7accccp-1f,   0x1.82p-1f,       0x1.893334p-1f,   0x1.906666p-1f,
    0x1.97999ap-1f,   0x1.9eccccp-1f,   0x1.a6p-1f,       0x1.ad3334p-1f,   0x1.b46666p-1f,
    0x1.bb999ap-1f,   0x1.c2ccccp-1f,   0x1.cap-1f,       0x1.d13334p-1f,   0x1.d86666p-1f,
    0x1.df999ap-1f,   0x1.e6ccccp-1f,   0x1.eep-1f,       0x1.f53334p-1f,   0x1.fc6666p-1f,
    0x1p+0f,
};

// One byte holds two codes: element 2j in the high nibble, element 2j+1 in the low nibble.
struct PackedNf4Pair {
  uint8_t byte;
};
static_assert(sizeof(PackedNf4Pair) == 1, "two NF4 codes per byte");

QLT_HOST_DEVICE constexpr uint8_t pack_nf4(uint8_t first, uint8_t second) {
  return static_cast<uint8_t>((first << 4) | second);
}
QLT_HOST_DEVICE constexpr uint8_t nf4_high(uint8_t byte) { return byte >> 4; }
QLT_HOST_DEVICE constexpr uint8_t nf4_low(uint8_t byte) { return byte & 0x0F; }

// Midpoint i between codes i and i+1, in fp32 (bit-identical to bnb's bounds and to the
// literals of its CUDA dQuantizeNF4 tree).
constexpr float nf4_midpoint(int i) { return (kCodebook[i] + kCodebook[i + 1]) * 0.5f; }

// Number of storage bytes and blocks for n elements.
QLT_HOST_DEVICE constexpr int64_t nf4_packed_bytes(int64_t n) { return (n + 1) / 2; }
QLT_HOST_DEVICE constexpr int64_t num_blocks(int64_t n, int64_t block) {
  return (n + block - 1) / block;
}

// Index into the nested lookup table for a normalized value v in [-1, 1]:
// trunc((v + 1) * 0.5 * 65535 + 0.5); bnb uses a fused multiply-add here, which gives the
// same index as separate operations for every fp32 input (checked exhaustively by the
// fixture script).
QLT_HOST_DEVICE inline uint16_t nested_lut_index(float v) {
  const float half = (v + 1.0f) * 0.5f;
  return static_cast<uint16_t>(half * 65535.0f + 0.5f);
}

// lut[i] = number of dynamic-map midpoints strictly below (2i / 65535) - 1 (fp32 ops).
inline void build_nested_lut(uint8_t* lut /* [kNestedLutSize] */) {
  for (int i = 0; i < kNestedLutSize; ++i) {
    const float value = (2.0f * static_cast<float>(i)) / 65535.0f - 1.0f;
    int count = 0;
    for (int j = 0; j + 1 < kDynamicMapSize; ++j) {
      if ((kDynamicMap[j] + kDynamicMap[j + 1]) * 0.5f < value) ++count;
    }
    lut[i] = static_cast<uint8_t>(count);
  }
}

}  // namespace qlt::nf4
