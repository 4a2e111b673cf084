// CUDA entry points of the NF4 ops: at::Tensor in, kernels/ (raw pointers + stream) out.
// Compiled in every build (src/*.cpp glob), but only QLT_CUDA builds (qlt::torch defines
// QLT_WITH_CUDA) have a body; the CPU build's versions that throw live in nf4.cpp.
#include "quant/nf4_cuda.h"

#if defined(QLT_WITH_CUDA)

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"
#include "nf4_layout.h"
#include "quant/kernel_dtype.h"

namespace qlt::quant {

// weight: CUDA, any shape (flattened row-major), fp32/bf16/fp16. The caller (quantize_nf4)
// has checked dtype and block size. Output tensors live on weight's device.
Nf4Tensor quantize_nf4_cuda(const at::Tensor& weight, const Nf4Options& options) {
  TORCH_CHECK(weight.is_cuda(), "quantize_nf4_cuda: weight is on ", weight.device());
  const c10::cuda::CUDAGuard guard(weight.device());
  const at::Tensor x = weight.contiguous();
  const int64_t n = x.numel(), block = options.block_size;
  const int64_t n_blocks = nf4::num_blocks(n, block);
  const auto on_device = at::TensorOptions().device(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();

  Nf4Tensor q;
  q.shape = weight.sizes().vec();
  q.dtype = weight.scalar_type();
  q.block_size = block;
  q.packed = at::empty({nf4::nf4_packed_bytes(n), 1}, on_device.dtype(at::kByte));  // [(n+1)/2, 1]
  at::Tensor absmax = at::empty({n_blocks}, on_device.dtype(at::kFloat));           // [n_blocks]
  kernels::nf4_quantize(x.const_data_ptr(), kernel_dtype(x.scalar_type(), "nf4 quantize"), n,
                        static_cast<int>(block), q.packed.mutable_data_ptr<uint8_t>(),
                        absmax.mutable_data_ptr<float>(), stream);
  if (!options.double_quant) {
    q.absmax = absmax;
    return q;
  }
  // offset = mean(absmax), computed on the CPU: bitsandbytes' value (and the CPU
  // reference's) is LibTorch's fp32 CPU mean, whose cascade summation a CUDA reduction does
  // not reproduce to the last ulp, and one ulp of offset can move double-quant codes. Costs
  // one [n_blocks] fp32 copy and a sync, once per weight at load time; in exchange
  // quantize_nf4 gives the same bytes on CPU and CUDA.
  q.offset = absmax.cpu().mean().item<float>();
  q.absmax = at::empty({n_blocks}, on_device.dtype(at::kByte));  // [n_blocks] uint8 codes
  q.nested_absmax = at::empty({nf4::num_blocks(n_blocks, nf4::kNestedBlockSize)},
                              on_device.dtype(at::kFloat));  // [ceil(n_blocks/256)]
  kernels::nf4_double_quantize(absmax.const_data_ptr<float>(), n_blocks, q.offset,
                               q.absmax.mutable_data_ptr<uint8_t>(),
                               q.nested_absmax.mutable_data_ptr<float>(), stream);
  // `absmax` is freed here while the kernel may still read it: safe, the caching allocator
  // reuses a block only for work queued later on the same stream.
  return q;
}

// out: contiguous, q.numel() elements, fp32/bf16/fp16, on q's device (checked by the caller,
// dequantize_nf4_into; re-checked here since this is a public entry point).
void dequantize_nf4_cuda_into(const Nf4Tensor& q, at::Tensor& out) {
  TORCH_CHECK(q.packed.is_cuda() && out.is_cuda() && out.device() == q.packed.device(),
              "dequantize_nf4_cuda_into: packed on ", q.packed.device(), ", out on ", out.device(),
              "; both must be on the same CUDA device");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q.numel(),
              "dequantize_nf4_cuda_into: out must be contiguous with ", q.numel(), " elements");
  const c10::cuda::CUDAGuard guard(out.device());
  const at::Tensor packed = q.packed.contiguous(), absmax = q.absmax.contiguous();
  const int64_t n_blocks = nf4::num_blocks(q.numel(), q.block_size);
  TORCH_CHECK(packed.numel() == nf4::nf4_packed_bytes(q.numel()) && absmax.numel() == n_blocks,
              "dequantize_nf4_cuda_into: ", q.numel(), " elements in blocks of ", q.block_size,
              " need ", nf4::nf4_packed_bytes(q.numel()), " packed bytes and ", n_blocks,
              " absmax values; got ", packed.numel(), " and ", absmax.numel());

  kernels::Nf4DeviceWeight w;
  w.packed = packed.const_data_ptr<uint8_t>();
  w.n = q.numel();
  w.block_size = static_cast<int>(q.block_size);
  at::Tensor nested;
  if (q.double_quant()) {
    nested = q.nested_absmax.contiguous();
    TORCH_CHECK(nested.numel() == nf4::num_blocks(n_blocks, nf4::kNestedBlockSize),
                "dequantize_nf4_cuda_into: ", n_blocks, " absmax codes need ",
                nf4::num_blocks(n_blocks, nf4::kNestedBlockSize), " nested absmax values; got ",
                nested.numel());
    TORCH_CHECK(absmax.scalar_type() == at::kByte && nested.scalar_type() == at::kFloat &&
                    absmax.device() == out.device() && nested.device() == out.device(),
                "dequantize_nf4_cuda_into: double quant needs uint8 absmax codes and fp32 "
                "nested absmax on ",
                out.device());
    w.absmax_codes = absmax.const_data_ptr<uint8_t>();
    w.nested_absmax = nested.const_data_ptr<float>();
    w.offset = q.offset;
  } else {
    TORCH_CHECK(absmax.scalar_type() == at::kFloat && absmax.device() == out.device(),
                "dequantize_nf4_cuda_into: absmax must be fp32 on ", out.device());
    w.absmax = absmax.const_data_ptr<float>();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(out.device().index()).stream();
  kernels::nf4_dequantize(w, out.mutable_data_ptr(),
                          kernel_dtype(out.scalar_type(), "nf4 dequantize"), stream);
}

}  // namespace qlt::quant

#endif  // QLT_WITH_CUDA
