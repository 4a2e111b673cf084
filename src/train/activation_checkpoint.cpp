#include "train/activation_checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <mutex>

namespace qlt::train {
namespace {

// What backward needs besides tensors: the block and the generator state at forward time.
// Held in the autograd context through an IValue capsule (the context keeps only IValues).
struct Recompute : torch::CustomClassHolder {
  std::function<at::Tensor(const at::Tensor&)> fn;
  std::optional<at::Generator> generator;
  at::Tensor generator_state;  // byte tensor from Generator::get_state(), when a generator
};

at::Tensor generator_state(at::Generator& generator) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(at::Generator& generator, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // Inputs: x, then the params (a TensorList: each is an autograd input of its own).
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            at::TensorList params, c10::intrusive_ptr<Recompute> recompute) {
    // Function::apply runs forward with grad mode off: nothing inside fn is recorded.
    if (recompute->generator) recompute->generator_state = generator_state(*recompute->generator);
    std::vector<at::Tensor> saved{x};  // x, then the params: the inputs, in input order
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    return recompute->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto recompute =
        c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const auto saved = ctx->get_saved_variables();  // x, then the params
    const at::Tensor& x = saved[0];
    const bool x_needs_grad = ctx->needs_input_grad(0);

    // Inputs of the recomputed graph we want grads for: the detached x (when needed) and the
    // params that require grad. Recorded by input position so the result lines up.
    at::Tensor x_detached = x.detach().requires_grad_(x_needs_grad);
    std::vector<at::Tensor> inputs;
    std::vector<size_t> positions;  // input position (0 = x) of each entry of `inputs`
    if (x_needs_grad) {
      inputs.push_back(x_detached);
      positions.push_back(0);
    }
    for (size_t i = 1; i < saved.size(); ++i) {
      if (ctx->needs_input_grad(i)) {
        inputs.push_back(saved[i]);
        positions.push_back(i);
      }
    }

    at::Tensor output;
    {
      std::optional<at::Tensor> state_at_backward;
      if (recompute->generator) {
        state_at_backward = generator_state(*recompute->generator);
        set_generator_state(*recompute->generator, recompute->generator_state);
      }
      at::AutoGradMode grad_on(true);
      output = recompute->fn(x_detached);
      if (recompute->generator) set_generator_state(*recompute->generator, *state_at_backward);
    }

    torch::autograd::variable_list grads(saved.size() + 1);  // + the capsule argument
    if (inputs.empty() || !output.requires_grad()) return grads;
    auto input_grads = torch::autograd::grad({output}, inputs, {grad_outputs[0]},
                                             /*retain_graph=*/false, /*create_graph=*/false,
                                             /*allow_unused=*/true);
    for (size_t k = 0; k < inputs.size(); ++k) grads[positions[k]] = input_grads[k];
    return grads;
  }
};

}  // namespace

at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params,
                        std::optional<at::Generator> generator) {
  auto recompute = c10::make_intrusive<Recompute>();
  recompute->fn = fn;
  recompute->generator = std::move(generator);
  return CheckpointFunction::apply(x, at::TensorList(params), recompute);
}

}  // namespace qlt::train
