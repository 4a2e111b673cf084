// CUDA entry points of the INT4 ops: at::Tensor in, kernels/ (raw pointers + stream) out.
// Compiled in every build (src/*.cpp glob), but only QLT_CUDA builds (qlt::torch defines
// QLT_WITH_CUDA) have a body; the CPU build's versions that throw live in int4.cpp.
#include "quant/int4_cuda.h"

#if defined(QLT_WITH_CUDA)

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "int4_layout.h"
#include "kernels.h"
#include "quant/kernel_dtype.h"

namespace qlt::quant {

// weight: CUDA [out, in], fp32/bf16/fp16; quantize_int4 has checked dtype, shape and group
// size. The blocks are allocated on weight's device.
Int4Tensor quantize_int4_cuda(const at::Tensor& weight, const Int4Options& options) {
  TORCH_CHECK(weight.is_cuda() && weight.dim() == 2 && weight.size(1) % options.group_size == 0,
              "quantize_int4_cuda: needs a CUDA [out, in] weight with in a multiple of ",
              options.group_size, "; got ", weight.sizes(), " on ", weight.device());
  const c10::cuda::CUDAGuard guard(weight.device());
  const at::Tensor x = weight.contiguous();
  const int64_t out = x.size(0), in = x.size(1), g = options.group_size;
  Int4Tensor q;
  q.shape = {out, in};
  q.dtype = weight.scalar_type();
  q.group_size = g;
  q.blocks = at::empty({out, in / g, int4::block_bytes(g)},
                       at::TensorOptions().device(x.device()).dtype(at::kByte));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  kernels::int4_quantize(x.const_data_ptr(), kernel_dtype(x.scalar_type(), "int4 quantize"),
                         q.num_groups(), static_cast<int>(g), q.blocks.mutable_data_ptr<uint8_t>(),
                         stream);
  return q;
}

// out: contiguous, q.numel() elements, fp32/bf16/fp16, on q's device (checked by the caller,
// dequantize_int4_into; re-checked here since this is a public entry point).
void dequantize_int4_cuda_into(const Int4Tensor& q, at::Tensor& out) {
  TORCH_CHECK(q.blocks.is_cuda() && out.is_cuda() && out.device() == q.blocks.device(),
              "dequantize_int4_cuda_into: blocks on ", q.blocks.device(), ", out on ", out.device(),
              "; both must be on the same CUDA device");
  TORCH_CHECK(out.is_contiguous() && out.numel() == q.numel(),
              "dequantize_int4_cuda_into: out must be contiguous with ", q.numel(), " elements");
  TORCH_CHECK(int4::valid_group_size(q.group_size) && q.numel() % q.group_size == 0,
              "dequantize_int4_cuda_into: group size ", q.group_size, " for ", q.numel(),
              " elements");
  const c10::cuda::CUDAGuard guard(out.device());
  const at::Tensor blocks = q.blocks.contiguous();
  const int64_t n_groups = q.num_groups();
  TORCH_CHECK(blocks.scalar_type() == at::kByte &&
                  blocks.numel() == n_groups * int4::block_bytes(q.group_size),
              "dequantize_int4_cuda_into: ", n_groups, " groups need ",
              n_groups * int4::block_bytes(q.group_size), " uint8 block bytes; got ",
              blocks.numel(), " ", blocks.scalar_type());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(out.device().index()).stream();
  kernels::int4_dequantize(blocks.const_data_ptr<uint8_t>(), n_groups,
                           static_cast<int>(q.group_size), out.mutable_data_ptr(),
                           kernel_dtype(out.scalar_type(), "int4 dequantize"), stream);
}

}  // namespace qlt::quant

#endif  // QLT_WITH_CUDA
