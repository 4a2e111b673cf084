// The CUDA path of the 8-bit AdamW: at::Tensor in, kernels/adamw_8bit.cu out. Compiled in every
// build (src/*.cpp glob), but only QLT_CUDA builds (qlt::torch defines QLT_WITH_CUDA) have a
// body; the CPU build's versions, internal errors, live in adamw_8bit.cpp.
#include "optim/adamw_8bit_cuda.h"

#if defined(QLT_WITH_CUDA)

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"

namespace qlt::optim {

AdamW8bitDeviceTables adamw_8bit_device_tables(const QuantLut& signed_lut,
                                               const QuantLut& unsigned_lut, at::Device device) {
  TORCH_CHECK(device.is_cuda(), "adamw_8bit_device_tables: ", device, " is not a CUDA device");
  TORCH_CHECK(signed_lut.map.numel() == kernels::kAdamW8bitMapSize &&
                  unsigned_lut.map.numel() == kernels::kAdamW8bitMapSize &&
                  static_cast<int>(signed_lut.index.size()) == kernels::kAdamW8bitLutSize &&
                  static_cast<int>(unsigned_lut.index.size()) == kernels::kAdamW8bitLutSize,
              "adamw_8bit_device_tables: the maps must have ", kernels::kAdamW8bitMapSize,
              " entries and the tables ", kernels::kAdamW8bitLutSize);
  const c10::cuda::CUDAGuard guard(device);
  // The LUT arrays are host memory owned by the QuantLut: wrap, then copy (synchronously, once).
  auto lut_tensor = [&](const QuantLut& lut) {
    const auto host = at::from_blob(const_cast<uint8_t*>(lut.index.data()),
                                    {static_cast<int64_t>(lut.index.size())}, at::kByte);
    return host.to(at::TensorOptions().device(device), /*non_blocking=*/false, /*copy=*/true);
  };
  AdamW8bitDeviceTables t;
  t.device = device;
  t.signed_map = signed_lut.map.to(device, at::kFloat).contiguous();      // [256]
  t.unsigned_map = unsigned_lut.map.to(device, at::kFloat).contiguous();  // [256]
  t.signed_lut = lut_tensor(signed_lut);                                  // [65536]
  t.unsigned_lut = lut_tensor(unsigned_lut);                              // [65536]
  return t;
}

void adamw_8bit_update_cuda(const at::Tensor& param, const at::Tensor& grad, at::Tensor& state1,
                            at::Tensor& state2, at::Tensor& absmax1, at::Tensor& absmax2,
                            const AdamW8bitStepScalars& scalars,
                            const AdamW8bitDeviceTables& tables) {
  const at::Device device = param.device();
  const int64_t n = param.numel();
  TORCH_CHECK(device.is_cuda() && param.scalar_type() == at::kFloat,
              "adamw_8bit_update_cuda: param must be an fp32 CUDA tensor; got ",
              param.scalar_type(), " on ", device);
  TORCH_CHECK(
      grad.device() == device && grad.scalar_type() == at::kFloat && grad.sizes() == param.sizes(),
      "adamw_8bit_update_cuda: grad must be fp32 of shape ", param.sizes(), " on ", device,
      "; got ", grad.scalar_type(), " ", grad.sizes(), " on ", grad.device());
  for (const at::Tensor* s : {&state1, &state2}) {
    TORCH_CHECK(s->device() == device && s->scalar_type() == at::kByte && s->is_contiguous() &&
                    s->numel() == n,
                "adamw_8bit_update_cuda: state codes must be contiguous uint8 with ", n,
                " elements on ", device, "; got ", s->scalar_type(), " ", s->sizes(), " on ",
                s->device());
  }
  for (const at::Tensor* a : {&absmax1, &absmax2}) {
    TORCH_CHECK(a->device() == device && a->scalar_type() == at::kFloat && a->is_contiguous() &&
                    a->numel() == state_blocks(n),
                "adamw_8bit_update_cuda: absmax must be contiguous fp32 with ", state_blocks(n),
                " elements on ", device, "; got ", a->scalar_type(), " ", a->sizes(), " on ",
                a->device());
  }
  TORCH_CHECK(tables.device == device && tables.signed_lut.defined(),
              "adamw_8bit_update_cuda: the quantization tables are for ", tables.device,
              ", the parameter is on ", device);

  const c10::cuda::CUDAGuard guard(device);
  // The kernel updates a flat fp32 buffer in place; a non-contiguous parameter (not made by
  // the trainer, which creates contiguous adapters) goes through a copy and back.
  at::Tensor p = param.is_contiguous() ? param : param.contiguous();
  const at::Tensor g = grad.contiguous();

  kernels::AdamW8bitState state;
  state.param = p.mutable_data_ptr<float>();
  state.grad = g.const_data_ptr<float>();
  state.state1 = state1.mutable_data_ptr<uint8_t>();
  state.state2 = state2.mutable_data_ptr<uint8_t>();
  state.absmax1 = absmax1.mutable_data_ptr<float>();
  state.absmax2 = absmax2.mutable_data_ptr<float>();
  state.n = n;
  kernels::AdamW8bitTables device_tables;
  device_tables.signed_map = tables.signed_map.const_data_ptr<float>();
  device_tables.signed_lut = tables.signed_lut.const_data_ptr<uint8_t>();
  device_tables.unsigned_map = tables.unsigned_map.const_data_ptr<float>();
  device_tables.unsigned_lut = tables.unsigned_lut.const_data_ptr<uint8_t>();
  kernels::AdamW8bitScalars k;
  k.beta1 = scalars.beta1;
  k.one_minus_beta1 = scalars.one_minus_beta1;
  k.beta2 = scalars.beta2;
  k.one_minus_beta2 = scalars.one_minus_beta2;
  k.correction2 = scalars.correction2;
  k.eps = scalars.eps;
  // No decay: the reference skips p.mul_; p * 1.0f is p bit for bit (finite, inf and zeros).
  k.decay = scalars.decay_applies ? scalars.decay : 1.0;
  k.step_size = scalars.step_size;

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  kernels::adamw_8bit_update(state, device_tables, k, stream);
  if (!p.is_same(param)) param.copy_(p);
  // `g`, a temporary contiguous copy when grad was not contiguous, may be freed while the
  // kernel still reads it: safe, the caching allocator reuses a block only for work queued
  // later on the same stream.
}

}  // namespace qlt::optim

#endif  // QLT_WITH_CUDA
