// Activation checkpointing for one block (e.g. a decoder layer): the forward keeps only the
// block's input; backward recomputes the block and backpropagates through the recomputation.
// LibTorch C++ has no torch.utils.checkpoint; this is its reentrant variant as a custom
// autograd function, except that the trainable leaves used inside the block are inputs of
// the function, so their grads reach .grad() through the ordinary AccumulateGrad path,
// exactly as without checkpointing.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <vector>

namespace qlt::train {

// Runs fn(x) without recording a graph and returns its output ([...] as fn returns it).
// In backward, recomputes fn on a detached copy of x with grad enabled and returns the grads
// for x (when x requires grad) and for every tensor in `params` that requires grad.
// `params` must list every trainable leaf fn uses (others would get no gradient); frozen
// tensors fn closes over need not be listed.
// `generator`, when given, is the one fn draws random numbers from (dropout): its state is
// saved before the forward, set back for the recompute (same masks), and afterwards restored
// to what it was when backward began, so later draws are unaffected.
// fn is copied and kept until backward: whatever it refers to must outlive the backward.
// fn must be deterministic apart from that generator, and must return a tensor that does not
// alias x. Re-running backward (retain_graph) recomputes again.
at::Tensor checkpointed(const std::function<at::Tensor(const at::Tensor&)>& fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params,
                        std::optional<at::Generator> generator = std::nullopt);

}  // namespace qlt::train
