#include "adapters/frozen_weight.h"

#include <torch/csrc/autograd/custom_function.h>

#include <map>
#include <utility>

namespace qlt::adapters {
namespace {

// One scratch buffer per (device, dtype), grown to the largest weight seen and reused by every
// NF4 layer: a dequantized weight lives only between its dequantize and its matmul. Calls on
// one thread run in order, so a layer never sees another layer's values.
at::Tensor dequantize_to_scratch(const quant::Nf4Tensor& q, at::ScalarType dtype) {
  thread_local std::map<std::pair<std::string, at::ScalarType>, at::Tensor> scratch;
  auto& buffer = scratch[{q.device().str(), dtype}];
  if (!buffer.defined() || buffer.numel() < q.numel()) {
    buffer = at::empty({q.numel()}, at::TensorOptions().dtype(dtype).device(q.device()));
  }
  auto view = buffer.narrow(0, 0, q.numel());
  quant::dequantize_nf4_into(q, view);
  return view.view(q.shape);
}

// y = x W^T with W in NF4. Saves only a pointer to the frozen NF4 weight (owned by the model,
// which outlives the graph); backward dequantizes again. The weight gets no gradient.
struct Nf4LinearFunction : public torch::autograd::Function<Nf4LinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const quant::Nf4Tensor* weight) {
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    return at::linear(x, dequantize_to_scratch(*weight, x.scalar_type()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto* weight =
        reinterpret_cast<const quant::Nf4Tensor*>(ctx->saved_data["weight"].toInt());
    const at::Tensor& grad_y = grad_outputs[0];  // [..., out]
    // dL/dx = dL/dy W: [..., out] x [out, in] -> [..., in]
    auto grad_x = at::matmul(grad_y, dequantize_to_scratch(*weight, grad_y.scalar_type()));
    return {grad_x, at::Tensor()};
  }
};

}  // namespace

int64_t FrozenWeight::out_features() const { return nf4 ? nf4->shape.at(0) : dense.size(0); }
int64_t FrozenWeight::in_features() const { return nf4 ? nf4->shape.at(1) : dense.size(1); }

int64_t FrozenWeight::storage_bytes() const {
  return nf4 ? nf4->storage_bytes() : static_cast<int64_t>(dense.nbytes());
}

at::Tensor FrozenWeight::materialize(at::ScalarType dtype) const {
  return nf4 ? quant::dequantize_nf4(*nf4, dtype) : dense.to(dtype);
}

at::Tensor frozen_linear(const at::Tensor& x, const FrozenWeight& weight) {
  if (!weight.quantized()) return at::linear(x, weight.dense);
  return Nf4LinearFunction::apply(x, &*weight.nf4);
}

}  // namespace qlt::adapters
