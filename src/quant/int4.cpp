// INT4 (GGUF Q4_1-shaped blocks) CPU reference: plain loops over fp32, every operation rounded
// separately (qlt builds with -ffp-contract=off), in the order of the `gguf` Python package's
// Q4_1 quantize_blocks / dequantize_blocks (gguf-py/gguf/quants.py), which mirror ggml's
// quantize_row_q4_1_ref / dequantize_row_q4_1. The exact rules are in kernels/int4_layout.h.
// CUDA tensors go to kernels/ through int4_cuda.h.
#include "quant/int4.h"

#include <ATen/Parallel.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>

#include "core/errors.h"
#include "int4_layout.h"
#include "io/safetensors.h"
#include "quant/ggml_blocks.h"
#include "quant/int4_cuda.h"

namespace qlt::quant {
namespace {

bool is_int4_float(at::ScalarType s) {
  return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf;
}

std::string tensor_prefix(std::string_view tensor_name) {
  return tensor_name.empty() ? std::string() : fmt::format("tensor {}: ", tensor_name);
}

// dtype as a safetensors header spells it (F64, I8, BOOL), else LibTorch's name.
std::string dtype_name(at::ScalarType s) {
  try {
    return io::safetensors_dtype(s);
  } catch (const UserError&) {
    return c10::toString(s);
  }
}

// The weight to quantize: fp32/bf16/fp16, 2-D [out, in] with in a multiple of the group size.
void check_quantize_input(const at::Tensor& weight, int64_t group_size,
                          std::string_view tensor_name) {
  const auto s = weight.scalar_type();
  const std::string what = tensor_prefix(tensor_name);
  if (!is_int4_float(s)) {
    if (at::isFloatingType(s)) {
      user_error(
          "{}dtype {} is not supported for INT4 quantization (it quantizes float32, bfloat16 "
          "and float16 weights); convert the checkpoint to bfloat16 or float32, or set "
          "quantization.type to \"none\"",
          what, dtype_name(s));
    }
    user_error(
        "{}dtype {} is not supported for INT4 quantization (it quantizes float32, bfloat16 and "
        "float16 weights); model.path must hold the full-precision weights (a model quantized "
        "in another format cannot be quantized again)",
        what, dtype_name(s));
  }
  if (weight.dim() != 2) {
    user_error("{}INT4 quantizes 2-D [out, in] weights; this one has shape [{}]", what,
               fmt::join(weight.sizes().vec(), ", "));
  }
  const int64_t in = weight.size(1);
  if (in % group_size != 0) {
    std::string advice;
    for (int g : int4::kGroupSizes) {
      if (in % g == 0) advice += fmt::format("{}{}", advice.empty() ? "" : " or ", g);
    }
    user_error(
        "{}shape [{}, {}]: the input dimension {} is not a multiple of the INT4 group size {}; "
        "{}",
        what, weight.size(0), in, in, group_size,
        advice.empty() ? std::string("quantize this model with quantization.type \"nf4\" instead")
                       : fmt::format("set quantization.group_size to {}", advice));
  }
}

// Min and max in a total order with -0 < +0 (the result does not depend on the order of
// the elements, so the CUDA tree reduction agrees), NaN propagating (the first one kept).
float min_total(float a, float b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  if (a != b) return a < b ? a : b;
  return std::signbit(a) ? a : b;
}
float max_total(float a, float b) {
  if (std::isnan(a)) return a;
  if (std::isnan(b)) return b;
  if (a != b) return a > b ? a : b;
  return std::signbit(a) ? b : a;
}

// min_total / max_total over x[0, g): the result of the sequential loop, computed with plain
// comparisons (which compile to branchless minss/maxss) and the two rare cases, a NaN and a
// zero extreme (whose sign the plain comparisons leave to chance), redone exactly.
void group_min_max(const float* x, int64_t g, float& mn_out, float& mx_out) {
  float mn = x[0], mx = x[0];
  bool nan = false;
  for (int64_t i = 1; i < g; ++i) {
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  for (int64_t i = 0; i < g; ++i) nan |= std::isnan(x[i]);
  if (nan || mn == 0.0f || mx == 0.0f) {
    mn = mx = x[0];
    for (int64_t i = 1; i < g; ++i) {
      mn = min_total(mn, x[i]);
      mx = max_total(mx, x[i]);
    }
  }
  mn_out = mn;
  mx_out = mx;
}

// One group of `g` fp32 values -> one block of int4::block_bytes(g) bytes.
void quantize_group(const float* x, int64_t g, uint8_t* block) {
  float mn = 0.0f, mx = 0.0f;
  group_min_max(x, g, mn, mx);
  const float d = (mx - mn) / 15.0f;
  const float id = d == 0.0f ? 0.0f : 1.0f / d;
  // Three roundings (subtract, multiply, add), then truncation; a value outside [0, 16) is
  // NaN or +inf (see int4_layout.h) and becomes 0 (selected before the conversion, so that the
  // float -> int cast is always defined).
  uint8_t q[int4::kMaxGroupSize];
  for (int64_t j = 0; j < g; ++j) {
    const float v = (x[j] - mn) * id + 0.5f;
    const float in_range = (v >= 0.0f && v < 16.0f) ? v : 0.0f;
    q[j] = static_cast<uint8_t>(static_cast<int32_t>(in_range));
  }
  uint8_t* qs = block + int4::kQsOffset;
  const int64_t half = g / 2;
  for (int64_t j = 0; j < half; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + half] << 4));
  const ggml::ggml_half d16 = ggml::fp32_to_fp16(d), m16 = ggml::fp32_to_fp16(mn);
  std::memcpy(block + int4::kDOffset, &d16, sizeof(d16));
  std::memcpy(block + int4::kMOffset, &m16, sizeof(m16));
}

// The Int4Tensor's fields agree with each other (an internal invariant, as every Int4Tensor
// comes from quantize_int4, int4_from_q4_1 or a reader that checked the file).
void check_int4_tensor(const Int4Tensor& q, const char* op) {
  TORCH_CHECK(int4::valid_group_size(q.group_size), op, ": group size ", q.group_size);
  TORCH_CHECK(
      q.shape.size() == 2 && q.shape[0] >= 0 && q.shape[1] >= 0 && q.shape[1] % q.group_size == 0,
      op, ": logical shape must be [out, in] with in a multiple of ", q.group_size);
  TORCH_CHECK(q.blocks.defined() && q.blocks.scalar_type() == at::kByte &&
                  q.blocks.numel() == q.num_groups() * int4::block_bytes(q.group_size),
              op, ": ", q.num_groups(), " groups need ",
              q.num_groups() * int4::block_bytes(q.group_size), " uint8 block bytes");
}

}  // namespace

#if !defined(QLT_WITH_CUDA)
// CPU build: a CUDA tensor cannot normally exist here; if one does, say which op is missing.
Int4Tensor quantize_int4_cuda(const at::Tensor&, const Int4Options&) {
  user_error(
      "int4 quantize: the tensor is on CUDA but this build has no CUDA kernels; rebuild "
      "with -DQLT_CUDA=ON");
}
void dequantize_int4_cuda_into(const Int4Tensor&, at::Tensor&) {
  user_error(
      "int4 dequantize: the tensor is on CUDA but this build has no CUDA kernels; rebuild "
      "with -DQLT_CUDA=ON");
}
#endif

int64_t int4_block_bytes(int64_t group_size) {
  check_int4_group_size(group_size, "int4_block_bytes");
  return int4::block_bytes(group_size);
}

int64_t Int4Tensor::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

int64_t Int4Tensor::storage_bytes() const { return blocks.nbytes(); }

Int4Tensor Int4Tensor::to(at::Device device) const {
  Int4Tensor out = *this;
  out.blocks = blocks.to(device);
  return out;
}

void check_int4_group_size(int64_t group_size, const std::string& what) {
  if (!int4::valid_group_size(group_size)) {
    user_error(
        "{}: INT4 group size {} is not supported; use 32 (the default: GGUF's Q4_1 blocks), "
        "64 or 128",
        what, group_size);
  }
}

Int4Tensor quantize_int4(const at::Tensor& weight, const Int4Options& options,
                         std::string_view tensor_name) {
  check_int4_group_size(options.group_size, tensor_name.empty()
                                                ? std::string("int4 quantize")
                                                : fmt::format("tensor {}", tensor_name));
  check_quantize_input(weight, options.group_size, tensor_name);
  if (weight.is_cuda()) return quantize_int4_cuda(weight, options);
  TORCH_CHECK(weight.device().is_cpu(), "int4 quantize: no implementation for device ",
              weight.device());

  const int64_t out = weight.size(0), in = weight.size(1), g = options.group_size;
  const int64_t bb = int4::block_bytes(g);
  const at::Tensor x = weight.to(at::kFloat).contiguous();  // exact for bf16/fp16
  Int4Tensor q;
  q.shape = {out, in};
  q.dtype = weight.scalar_type();
  q.group_size = g;
  q.blocks = at::empty({out, in / g, bb}, at::kByte);
  const float* xs = x.const_data_ptr<float>();
  uint8_t* blocks = q.blocks.mutable_data_ptr<uint8_t>();
  at::parallel_for(0, q.num_groups(), 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) quantize_group(xs + b * g, g, blocks + b * bb);
  });
  return q;
}

Int4Tensor int4_from_q4_1(std::span<const uint8_t> bytes, int64_t out_features, int64_t in_features,
                          at::ScalarType dtype, std::string_view tensor_name) {
  const std::string what = tensor_prefix(tensor_name);
  if (!is_int4_float(dtype)) {
    user_error("{}a Q4_1 weight dequantizes to float32, bfloat16 or float16, not {}", what,
               dtype_name(dtype));
  }
  if (out_features < 0 || in_features < 0 || in_features % ggml::QK4_1 != 0) {
    user_error(
        "{}shape [{}, {}]: a Q4_1 tensor needs an input dimension that is a multiple of {}; "
        "the file is damaged",
        what, out_features, in_features, ggml::QK4_1);
  }
  int64_t n_blocks = 0, n_bytes = 0;
  const bool overflow =
      __builtin_mul_overflow(out_features, in_features / ggml::QK4_1, &n_blocks) ||
      __builtin_mul_overflow(n_blocks, int4::block_bytes(32), &n_bytes);
  if (overflow || static_cast<uint64_t>(n_bytes) != bytes.size()) {
    user_error(
        "{}shape [{}, {}] in Q4_1 takes {} blocks of {} bytes, but {} bytes were given; the "
        "file is damaged",
        what, out_features, in_features,
        overflow ? std::string("more than 2^63 / 20") : std::to_string(n_blocks),
        int4::block_bytes(32), bytes.size());
  }
  Int4Tensor q;
  q.shape = {out_features, in_features};
  q.dtype = dtype;
  q.group_size = 32;
  q.blocks = at::empty({out_features, in_features / 32, int4::block_bytes(32)}, at::kByte);
  if (n_bytes > 0) std::memcpy(q.blocks.mutable_data_ptr<uint8_t>(), bytes.data(), bytes.size());
  return q;
}

void dequantize_int4_into(const Int4Tensor& q, at::Tensor& out) {
  if (!is_int4_float(out.scalar_type())) {
    user_error("int4 dequantize: dtype {} is not supported; use float32, bfloat16 or float16",
               c10::toString(out.scalar_type()));
  }
  check_int4_tensor(q, "int4 dequantize");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q.numel() && out.device() == q.device(),
              "int4 dequantize: output must be contiguous, with ", q.numel(), " elements, on ",
              q.device());
  if (q.device().is_cuda()) return dequantize_int4_cuda_into(q, out);
  TORCH_CHECK(q.device().is_cpu(), "int4 dequantize: no implementation for device ", q.device());

  const at::Tensor blocks = q.blocks.contiguous();
  const uint8_t* bp = blocks.const_data_ptr<uint8_t>();
  const int64_t g = q.group_size, half = g / 2, bb = int4::block_bytes(g);
  // Per block: d and m widened exactly from fp16; y = d * q + m in fp32 (two roundings, as
  // numpy's (d * qs) + m), then one round-to-nearest-even cast to the output dtype.
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, out.scalar_type(), "int4_dequantize", [&] {
        scalar_t* o = out.mutable_data_ptr<scalar_t>();
        at::parallel_for(0, q.num_groups(), 512, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            const uint8_t* block = bp + b * bb;
            ggml::ggml_half d16, m16;
            std::memcpy(&d16, block + int4::kDOffset, sizeof(d16));
            std::memcpy(&m16, block + int4::kMOffset, sizeof(m16));
            const float d = ggml::fp16_to_fp32(d16), m = ggml::fp16_to_fp32(m16);
            const uint8_t* qs = block + int4::kQsOffset;
            scalar_t* y = o + b * g;
            for (int64_t j = 0; j < half; ++j) {
              y[j] = static_cast<scalar_t>(d * static_cast<float>(qs[j] & 0xF) + m);
              y[j + half] = static_cast<scalar_t>(d * static_cast<float>(qs[j] >> 4) + m);
            }
          }
        });
      });
}

at::Tensor dequantize_int4(const Int4Tensor& q, std::optional<at::ScalarType> dtype) {
  auto out =
      at::empty(q.shape, at::TensorOptions().dtype(dtype.value_or(q.dtype)).device(q.device()));
  dequantize_int4_into(q, out);
  return out;
}

}  // namespace qlt::quant
