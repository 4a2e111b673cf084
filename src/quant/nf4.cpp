// NF4 CPU reference: plain loops over fp32, mirroring bitsandbytes 0.50.2 on the CPU
// operation for operation (kernels/nf4_layout.h lists the semantics). CUDA tensors go to
// kernels/ through nf4_cuda.h.
#include "quant/nf4.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <mutex>

#include "core/errors.h"
#include "io/safetensors.h"
#include "nf4_layout.h"
#include "quant/nf4_cuda.h"

namespace qlt::quant {
namespace {

// The 15 midpoints between consecutive NF4 codebook values (ascending).
const std::array<float, nf4::kNumCodes - 1>& nf4_midpoints() {
  static const std::array<float, nf4::kNumCodes - 1> midpoints = [] {
    std::array<float, nf4::kNumCodes - 1> m{};
    for (int i = 0; i < nf4::kNumCodes - 1; ++i) m[i] = nf4::nf4_midpoint(i);
    return m;
  }();
  return midpoints;
}

const uint8_t* nested_lut() {
  static const std::array<uint8_t, nf4::kNestedLutSize> lut = [] {
    std::array<uint8_t, nf4::kNestedLutSize> l{};
    nf4::build_nested_lut(l.data());
    return l;
  }();
  return lut.data();
}

bool is_nf4_float(at::ScalarType s) {
  return s == at::kFloat || s == at::kBFloat16 || s == at::kHalf;
}

void check_float_input(const at::Tensor& t, const char* op) {
  const auto s = t.scalar_type();
  if (!is_nf4_float(s)) {
    user_error("{}: dtype {} is not supported; use float32, bfloat16 or float16", op,
               c10::toString(s));
  }
}

// The weight to quantize must be fp32/bf16/fp16; says which tensor and what to do otherwise.
void check_quantize_input(const at::Tensor& weight, std::string_view tensor_name) {
  const auto s = weight.scalar_type();
  if (is_nf4_float(s)) return;
  std::string dtype;  // as a safetensors header spells it (F64, I8, BOOL), else LibTorch's name
  try {
    dtype = io::safetensors_dtype(s);
  } catch (const UserError&) {
    dtype = c10::toString(s);
  }
  const std::string what =
      tensor_name.empty() ? std::string() : fmt::format("tensor {}: ", tensor_name);
  if (at::isFloatingType(s)) {
    user_error(
        "{}dtype {} is not supported for NF4 quantization (it quantizes float32, bfloat16 and "
        "float16 weights); convert the checkpoint to bfloat16 or float32 (e.g. save it again "
        "with torch_dtype=torch.bfloat16), or set quantization.type to \"none\" (the weight is "
        "then converted to model.compute_dtype)",
        what, dtype);
  }
  user_error(
      "{}dtype {} is not supported for NF4 quantization (it quantizes float32, bfloat16 and "
      "float16 weights); model.path must hold the full-precision weights (a model quantized in "
      "another format cannot be quantized again)",
      what, dtype);
}

// absmax - offset quantized in blocks of 256 with the dynamic map through the lookup table.
void double_quantize(const float* absmax, int64_t n_blocks, float offset, uint8_t* codes,
                     float* nested_absmax) {
  const uint8_t* lut = nested_lut();
  for (int64_t start = 0, nb = 0; start < n_blocks; start += nf4::kNestedBlockSize, ++nb) {
    const int64_t end = std::min<int64_t>(n_blocks, start + nf4::kNestedBlockSize);
    float a = 0.0f;
    for (int64_t i = start; i < end; ++i) a = std::max(a, std::fabs(absmax[i] - offset));
    nested_absmax[nb] = a;
    if (a == 0.0f) {
      std::fill(codes + start, codes + end, uint8_t{0});
      continue;
    }
    const float inv = 1.0f / a;
    for (int64_t i = start; i < end; ++i) {
      const float v = std::clamp((absmax[i] - offset) * inv, -1.0f, 1.0f);
      codes[i] = lut[nf4::nested_lut_index(v)];
    }
  }
}

}  // namespace

#if !defined(QLT_WITH_CUDA)
// CPU build: a CUDA tensor cannot normally exist here; if one does, say which op is missing.
Nf4Tensor quantize_nf4_cuda(const at::Tensor&, const Nf4Options&) {
  user_error(
      "nf4 quantize: the tensor is on CUDA but this build has no CUDA kernels; rebuild "
      "with -DQLT_CUDA=ON");
}
void dequantize_nf4_cuda_into(const Nf4Tensor&, at::Tensor&) {
  user_error(
      "nf4 dequantize: the tensor is on CUDA but this build has no CUDA kernels; rebuild "
      "with -DQLT_CUDA=ON");
}
#endif

int64_t Nf4Tensor::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

int64_t Nf4Tensor::num_blocks() const { return nf4::num_blocks(numel(), block_size); }

int64_t Nf4Tensor::storage_bytes() const {
  int64_t bytes = packed.nbytes() + absmax.nbytes();
  if (double_quant()) bytes += nested_absmax.nbytes() + static_cast<int64_t>(sizeof(float));
  return bytes;
}

Nf4Tensor Nf4Tensor::to(at::Device device) const {
  Nf4Tensor out = *this;
  out.packed = packed.to(device);
  out.absmax = absmax.to(device);
  if (double_quant()) out.nested_absmax = nested_absmax.to(device);
  return out;
}

void check_nf4_block_size(int64_t block_size, const std::string& what) {
  const bool power_of_two = block_size > 0 && (block_size & (block_size - 1)) == 0;
  if (!power_of_two || block_size < nf4::kMinBlockSize || block_size > nf4::kMaxBlockSize) {
    user_error(
        "{}: NF4 block size {} is not supported; use a power of two from {} to {} "
        "(64 is the QLoRA default)",
        what, block_size, nf4::kMinBlockSize, nf4::kMaxBlockSize);
  }
}

Nf4Tensor quantize_nf4(const at::Tensor& weight, const Nf4Options& options,
                       std::string_view tensor_name) {
  check_quantize_input(weight, tensor_name);
  check_nf4_block_size(options.block_size, "nf4 quantize");
  if (weight.is_cuda()) return quantize_nf4_cuda(weight, options);
  TORCH_CHECK(weight.device().is_cpu(), "nf4 quantize: no implementation for device ",
              weight.device());

  const auto x = weight.reshape({-1}).to(at::kFloat).contiguous();  // exact for bf16/fp16
  const float* xs = x.const_data_ptr<float>();
  const int64_t n = x.numel(), block = options.block_size;
  const int64_t n_blocks = nf4::num_blocks(n, block);

  Nf4Tensor q;
  q.shape = weight.sizes().vec();
  q.dtype = weight.scalar_type();
  q.block_size = block;
  q.packed = at::zeros({nf4::nf4_packed_bytes(n), 1}, at::kByte);
  auto absmax = at::empty({n_blocks}, at::kFloat);
  uint8_t* packed = q.packed.mutable_data_ptr<uint8_t>();
  float* am = absmax.mutable_data_ptr<float>();
  const auto& midpoints = nf4_midpoints();

  // Block by block: codes into a per-chunk buffer, then packed two per byte (a block size is
  // even, so every block starts on a byte boundary; an odd-sized tensor's last byte pairs its
  // last code with code 7, which is 0.0, as bitsandbytes pads).
  at::parallel_for(0, n_blocks, 16, [&](int64_t b0, int64_t b1) {
    std::vector<float> scaled(static_cast<size_t>(block));
    std::vector<int32_t> codes(static_cast<size_t>(block) + 1);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = b * block, end = std::min(n, start + block), len = end - start;
      float a = 0.0f;
      for (int64_t i = start; i < end; ++i) a = std::max(a, std::fabs(xs[i]));
      const float clamped = std::max(a, nf4::kMinAbsmax);
      if (len == block) {
        // Full block: multiply by the fp32 reciprocal; store the unclamped absmax.
        const float inv = 1.0f / clamped;
        for (int64_t i = 0; i < len; ++i) scaled[i] = std::clamp(xs[start + i] * inv, -1.0f, 1.0f);
        am[b] = a;
      } else {
        // Partial last block: a true division; store the clamped absmax (bnb's default backend).
        for (int64_t i = 0; i < len; ++i)
          scaled[i] = std::clamp(xs[start + i] / clamped, -1.0f, 1.0f);
        am[b] = clamped;
      }
      // code = number of midpoints strictly below the value, by a branchless binary search
      // over the 15 sorted midpoints (4 comparisons instead of 15; the same count).
      for (int64_t i = 0; i < len; ++i) {
        const float v = scaled[i];
        int c = 8 * static_cast<int>(v > midpoints[7]);
        c += 4 * static_cast<int>(v > midpoints[c + 3]);
        c += 2 * static_cast<int>(v > midpoints[c + 1]);
        c += static_cast<int>(v > midpoints[c]);
        codes[i] = c;
      }
      codes[len] = 7;  // pad code (0.0) for an odd length
      for (int64_t j = 0; j < (len + 1) / 2; ++j)
        packed[start / 2 + j] = nf4::pack_nf4(static_cast<uint8_t>(codes[2 * j]),
                                              static_cast<uint8_t>(codes[2 * j + 1]));
    }
  });

  if (!options.double_quant) {
    q.absmax = absmax;
    return q;
  }
  q.offset = absmax.mean().item<float>();  // LibTorch's fp32 mean, as bnb computes it
  q.absmax = at::empty({n_blocks}, at::kByte);
  q.nested_absmax = at::empty({nf4::num_blocks(n_blocks, nf4::kNestedBlockSize)}, at::kFloat);
  double_quantize(am, n_blocks, q.offset, q.absmax.mutable_data_ptr<uint8_t>(),
                  q.nested_absmax.mutable_data_ptr<float>());
  return q;
}

at::Tensor nf4_absmax_fp32(const Nf4Tensor& q) {
  if (!q.double_quant()) return q.absmax.to(at::kFloat);
  auto codes = q.absmax.cpu().contiguous();
  auto nested = q.nested_absmax.cpu().contiguous();
  const int64_t n_blocks = codes.numel();
  auto out = at::empty({n_blocks}, at::kFloat);
  const uint8_t* c = codes.const_data_ptr<uint8_t>();
  const float* na = nested.const_data_ptr<float>();
  float* o = out.mutable_data_ptr<float>();
  for (int64_t b = 0; b < n_blocks; ++b) {
    // Multiply, then a separate add: no fused multiply-add (bnb's order of operations).
    // (qlt compiles with -ffp-contract=off, so this stays two roundings.)
    const float scaled = nf4::kDynamicMap[c[b]] * na[b / nf4::kNestedBlockSize];
    o[b] = scaled + q.offset;
  }
  return out.to(q.device());
}

void dequantize_nf4_into(const Nf4Tensor& q, at::Tensor& out) {
  check_float_input(out, "nf4 dequantize");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q.numel() && out.device() == q.device(),
              "nf4 dequantize: output must be contiguous, with ", q.numel(), " elements, on ",
              q.device());
  if (q.device().is_cuda()) return dequantize_nf4_cuda_into(q, out);
  auto absmax = nf4_absmax_fp32(q);
  const float* am = absmax.const_data_ptr<float>();
  auto packed = q.packed.contiguous();
  const uint8_t* p = packed.const_data_ptr<uint8_t>();
  const int64_t n = q.numel(), block = q.block_size;
  const int64_t n_blocks = q.num_blocks();
  // Block by block: one absmax per block, two codes per byte (a block size is even, so a
  // block starts on a byte boundary; only the last element of an odd-sized tensor is a lone
  // high nibble). fp32 product, then one round-to-nearest-even cast to the output dtype.
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, out.scalar_type(), "nf4_dequantize", [&] {
        scalar_t* o = out.mutable_data_ptr<scalar_t>();
        const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / block);
        at::parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            const float a = am[b];
            const int64_t begin = b * block, end = std::min(n, begin + block);
            int64_t i = begin;
            for (; i + 1 < end; i += 2) {
              const uint8_t byte = p[i / 2];
              o[i] = static_cast<scalar_t>(nf4::kCodebook[nf4::nf4_high(byte)] * a);
              o[i + 1] = static_cast<scalar_t>(nf4::kCodebook[nf4::nf4_low(byte)] * a);
            }
            if (i < end) o[i] = static_cast<scalar_t>(nf4::kCodebook[nf4::nf4_high(p[i / 2])] * a);
          }
        });
      });
}

at::Tensor dequantize_nf4(const Nf4Tensor& q, std::optional<at::ScalarType> dtype) {
  auto out =
      at::empty(q.shape, at::TensorOptions().dtype(dtype.value_or(q.dtype)).device(q.device()));
  dequantize_nf4_into(q, out);
  return out;
}

at::Tensor nf4_quant_map() {
  return at::from_blob(const_cast<float*>(nf4::kCodebook), {nf4::kNumCodes}, at::kFloat).clone();
}

at::Tensor nf4_nested_quant_map() {
  return at::from_blob(const_cast<float*>(nf4::kDynamicMap), {nf4::kDynamicMapSize}, at::kFloat)
      .clone();
}

}  // namespace qlt::quant
