#include "adapters/frozen_weight.h"

#include <torch/csrc/autograd/custom_function.h>

#include <map>
#include <utility>

namespace qlt::adapters {
namespace {

// One scratch buffer per (device, dtype), grown to the largest weight seen and reused by every
// quantized layer: a dequantized weight lives only between its dequantize and its matmul. Calls on
// one thread run in order, so a layer never sees another layer's values.
at::Tensor dequantize_to_scratch(const quant::StoredWeight& q, at::ScalarType dtype) {
  thread_local std::map<std::pair<std::string, at::ScalarType>, at::Tensor> scratch;
  const at::Device device = quant::stored_device(q);
  const std::vector<int64_t> shape = quant::stored_shape(q);
  const int64_t numel = shape.at(0) * shape.at(1);
  auto& buffer = scratch[{device.str(), dtype}];
  if (!buffer.defined() || buffer.numel() < numel) {
    buffer = at::empty({numel}, at::TensorOptions().dtype(dtype).device(device));
  }
  auto view = buffer.narrow(0, 0, numel).view(shape);
  quant::dequantize_into(q, view);
  return view;
}

// y = x W^T with W quantized. Saves only a pointer to the frozen weight (owned by the model,
// which outlives the graph); backward dequantizes again. The weight gets no gradient.
struct QuantizedLinearFunction : public torch::autograd::Function<QuantizedLinearFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const quant::StoredWeight* weight) {
    ctx->saved_data["weight"] = reinterpret_cast<int64_t>(weight);
    return at::linear(x, dequantize_to_scratch(*weight, x.scalar_type()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto* weight =
        reinterpret_cast<const quant::StoredWeight*>(ctx->saved_data["weight"].toInt());
    const at::Tensor& grad_y = grad_outputs[0];  // [..., out]
    // dL/dx = dL/dy W: [..., out] x [out, in] -> [..., in]
    auto grad_x = at::matmul(grad_y, dequantize_to_scratch(*weight, grad_y.scalar_type()));
    return {grad_x, at::Tensor()};
  }
};

}  // namespace

int64_t FrozenWeight::out_features() const { return quant::stored_shape(stored).at(0); }
int64_t FrozenWeight::in_features() const { return quant::stored_shape(stored).at(1); }

const at::Tensor& FrozenWeight::dense() const {
  const auto* t = std::get_if<at::Tensor>(&stored);
  TORCH_CHECK(t != nullptr, "FrozenWeight::dense: the weight is stored as ",
              quant::describe(stored));
  return *t;
}

at::Tensor frozen_linear(const at::Tensor& x, const FrozenWeight& weight) {
  if (!weight.quantized()) return at::linear(x, weight.dense());
  return QuantizedLinearFunction::apply(x, &weight.stored);
}

}  // namespace qlt::adapters
