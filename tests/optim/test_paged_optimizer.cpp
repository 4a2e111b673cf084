// optimizer.type paged_adamw / paged_adamw_8bit where there is no CUDA managed memory (CPU
// tensors): each runs as its non-paged twin, with the same numbers bit for bit, reports
// paged() false, and a paged type and its twin resume each other's state (paging changes where
// the state lives, not what it is), while a different state layout is refused. The paged path
// itself (managed memory, prefetch) needs a GPU: tests/gpu.
#include <catch2/catch.hpp>

#include "optim/optimizer.h"
#include "optim/paged_state.h"

namespace {

using Catch::Matchers::Contains;
using qlt::optim::Optimizer;
using qlt::optim::optimizer_type;

// Two parameters: 6000 elements (8-bit state in adamw_8bit) and 300 (fp32 state), fixed seed.
std::vector<std::pair<std::string, at::Tensor>> paged_test_leaves() {
  at::manual_seed(11);
  return {{"w", at::randn({60, 100}).requires_grad_()}, {"b", at::randn({300}).requires_grad_()}};
}

// Three steps with gradients from a fixed seed; returns the parameters after them.
std::vector<at::Tensor> three_steps(Optimizer& opt,
                                    const std::vector<std::pair<std::string, at::Tensor>>& leaves) {
  at::manual_seed(12);
  for (int i = 0; i < 3; ++i) {
    for (const auto& [name, p] : leaves) p.mutable_grad() = at::randn(p.sizes());
    opt.step(1e-2);
    opt.zero_grad();
  }
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : leaves) out.push_back(p.detach().clone());
  return out;
}

std::map<std::string, at::Tensor> state_map(const Optimizer& opt) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [name, t] : opt.state_tensors()) m[name] = t;
  return m;
}

}  // namespace

TEST_CASE("paged optimizer types on the CPU run as their twins, bit for bit", "[optim][paged]") {
  CHECK_FALSE(qlt::optim::paging_supported(at::Device(at::kCPU)));
  qlt::optim::AdamWOptions options;
  options.weight_decay = 0.01;
  for (const auto& [paged_name, twin_name] :
       {std::pair{"paged_adamw", "adamw"}, std::pair{"paged_adamw_8bit", "adamw_8bit"}}) {
    INFO(paged_name);
    const auto& row = optimizer_type(paged_name);
    CHECK(row.paged);
    CHECK(row.state == optimizer_type(twin_name).state);
    const auto paged_leaves = paged_test_leaves();
    Optimizer paged(row, paged_leaves, options);
    CHECK_FALSE(paged.paged());
    const auto twin_leaves = paged_test_leaves();
    Optimizer twin(optimizer_type(twin_name), twin_leaves, options);
    const auto a = three_steps(paged, paged_leaves), b = three_steps(twin, twin_leaves);
    for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i], b[i]));
    const auto sa = state_map(paged), sb = state_map(twin);
    REQUIRE(sa.size() == sb.size());
    for (const auto& [name, t] : sa) CHECK(at::equal(t, sb.at(name)));
    CHECK(paged.state_meta()["type"] == paged_name);

    // The twin's checkpoint resumes the paged type and the other way round.
    const auto fresh_leaves = paged_test_leaves();
    Optimizer resumed(row, fresh_leaves, options);
    resumed.load_state(sb, twin.state_meta());
    CHECK(resumed.steps_taken() == 3);
    for (const auto& [name, t] : state_map(resumed)) CHECK(at::equal(t, sb.at(name)));
    const auto other_leaves = paged_test_leaves();
    Optimizer back(optimizer_type(twin_name), other_leaves, options);
    back.load_state(sa, paged.state_meta());
    CHECK(back.steps_taken() == 3);
  }
}

TEST_CASE("a paged type refuses the state of another layout, naming both types", "[optim][paged]") {
  const auto leaves_8bit = paged_test_leaves();
  Optimizer eight(optimizer_type("paged_adamw_8bit"), leaves_8bit, {});
  const auto leaves_fp32 = paged_test_leaves();
  Optimizer fp32(optimizer_type("adamw"), leaves_fp32, {});
  CHECK_THROWS_WITH(eight.load_state(state_map(fp32), fp32.state_meta()),
                    Contains("optimizer.type \"adamw\", this run's optimizer.type is "
                             "\"paged_adamw_8bit\"") &&
                        Contains("paged / non-paged twin"));
  auto meta = fp32.state_meta();
  meta["type"] = "sgd";
  CHECK_THROWS_WITH(fp32.load_state(state_map(fp32), meta), Contains("\"sgd\""));
}
