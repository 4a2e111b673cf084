// optimizer.type paged_adamw / paged_adamw_8bit on a GPU (optim/paged_state.h): the state lives in
// CUDA managed memory (tensors of >= 1e5 elements), is prefetched before each update, and the
// numbers equal the non-paged twin's on the same GPU bit for bit (paging moves bytes, it does
// not change arithmetic). Needs LibTorch's CUDA (QLT_CUDA builds); compiled empty otherwise.
#if defined(QLT_WITH_CUDA)
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>

#include "optim/optimizer.h"
#include "optim/paged_state.h"

namespace {

using qlt::optim::Optimizer;
using qlt::optim::optimizer_type;

std::vector<std::pair<std::string, at::Tensor>> gpu_paged_leaves() {
  at::manual_seed(21);
  const auto cuda = at::TensorOptions().device(at::kCUDA, 0);
  return {{"w", at::randn({64, 4096}, cuda).requires_grad_()},
          {"b", at::randn({300}, cuda).requires_grad_()}};
}

std::vector<at::Tensor> gpu_three_steps(
    Optimizer& opt, const std::vector<std::pair<std::string, at::Tensor>>& leaves) {
  at::manual_seed(22);
  for (int i = 0; i < 3; ++i) {
    for (const auto& [name, p] : leaves) p.mutable_grad() = at::randn(p.sizes(), p.options());
    opt.step(1e-2);
    opt.zero_grad();
  }
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : leaves) out.push_back(p.detach().cpu());
  return out;
}

bool is_managed(const at::Tensor& t) {
  cudaPointerAttributes attributes{};
  return cudaPointerGetAttributes(&attributes, t.data_ptr()) == cudaSuccess &&
         attributes.type == cudaMemoryTypeManaged;
}

}  // namespace

TEST_CASE("paged optimizer types keep their state in managed memory, with the twin's numbers",
          "[gpu][paged]") {
  REQUIRE(qlt::optim::paging_supported(at::Device(at::kCUDA, 0)));
  qlt::optim::AdamWOptions options;
  options.weight_decay = 0.01;
  for (const auto& [paged_name, twin_name] :
       {std::pair{"paged_adamw", "adamw"}, std::pair{"paged_adamw_8bit", "adamw_8bit"}}) {
    INFO(paged_name);
    const auto paged_leaves = gpu_paged_leaves();
    Optimizer paged(optimizer_type(paged_name), paged_leaves, options);
    CHECK(paged.paged());
    int64_t managed = 0;
    for (const auto& [name, t] : paged.state_tensors()) {
      INFO(name);
      CHECK(t.is_cuda());
      // bnb's rule: tensors of >= 1e5 elements are paged (w's two moments), smaller ones not.
      CHECK(is_managed(t) == (t.numel() >= qlt::optim::kMinPagedElements));
      managed += is_managed(t);
    }
    CHECK(managed == 2);
    const auto twin_leaves = gpu_paged_leaves();
    Optimizer twin(optimizer_type(twin_name), twin_leaves, options);
    CHECK_FALSE(twin.paged());
    const auto a = gpu_three_steps(paged, paged_leaves);
    const auto b = gpu_three_steps(twin, twin_leaves);
    for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i], b[i]));
    std::vector<at::Tensor> state;
    for (const auto& [name, t] : paged.state_tensors()) state.push_back(t);
    CHECK(qlt::optim::prefetch_to_device(state) > 0);
  }
}
#endif  // QLT_WITH_CUDA
