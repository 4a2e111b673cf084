// Global L2 gradient-norm clipping, bit-identical to torch.nn.utils.clip_grad_norm_ (torch
// 2.11, norm_type 2, error_if_nonfinite false; foreach off and on give the same bits on CPU):
//   norms = [vector_norm(g) for each defined grad]         fp32 0-dim each
//   total = vector_norm(stack(norms))                      fp32
//   coef  = clamp(max_norm / (total + 1e-6), max=1)        fp32; Python's `float / tensor`
//                                                          is reciprocal(t) * float
//   g *= coef                                              for every grad, also when coef == 1
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace qlt::optim {

// Clips the grads of `params` in place (parameters without a grad are ignored) and returns the
// total norm before clipping as a double (exactly the fp32 value torch returns). No grads at
// all: returns 0 and changes nothing. max_norm <= 0: only measures, never scales. A non-finite
// total is returned as is (the grads are then scaled by the NaN/0 coefficient exactly like
// torch does); the caller decides whether to skip the step.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// The total norm alone (no clipping): the same number clip_grad_norm returns.
double grad_norm(const std::vector<at::Tensor>& params);

}  // namespace qlt::optim
