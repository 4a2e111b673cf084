// OverlappedAllReduce (dist/overlapped_all_reduce.h) in a one-rank Gloo group: the sums it
// writes into .grad after an armed backward are the gradients accumulated over the step's
// micro-batches, bit for bit; a parameter without a gradient keeps none; a parameter used twice
// in the graph still gets its whole gradient; unarmed backward passes are left alone. (Several
// ranks: integration/test_data_parallel.cpp.)
#include <catch2/catch.hpp>

#include "dist/data_parallel.h"
#include "dist/overlapped_all_reduce.h"
#include "test_common.h"

namespace {

// Loss of one micro-batch: a and b used once, d twice, c not at all.
at::Tensor overlap_test_loss(const std::vector<at::Tensor>& p, const at::Tensor& x) {
  return (p[0] * x).sum() + (p[1] * x * x).sum() + (p[3] * x).sum() * (p[3] * x).sum();
}

}  // namespace

TEST_CASE("overlapped all-reduce writes the step's accumulated gradients", "[dist]") {
  qlt::dist::DistEnv env;
  env.master_addr = "127.0.0.1";
  env.master_port = qlt::test::free_tcp_port();
  auto dp = qlt::dist::DataParallel::join(env, "gloo", std::chrono::seconds(20), "hash");
  at::manual_seed(5);
  std::vector<at::Tensor> params, reference;
  for (int i = 0; i < 4; ++i) {
    params.push_back(at::randn({300}).requires_grad_());
    reference.push_back(params.back().detach().clone().requires_grad_());
  }
  qlt::dist::OverlappedAllReduce sync(*dp, params);
  CHECK(sync.bucket_count() == 1);
  const std::vector<at::Tensor> xs = {at::randn({300}), at::randn({300}), at::randn({300})};
  for (int step = 0; step < 2; ++step) {
    for (auto* set : {&params, &reference})
      for (auto& p : *set) p.mutable_grad().reset();
    for (size_t k = 0; k < xs.size(); ++k) {
      if (k + 1 == xs.size()) sync.arm();
      overlap_test_loss(params, xs[k]).backward();
      overlap_test_loss(reference, xs[k]).backward();
    }
    sync.finish();
    for (int i : {0, 1, 3}) {
      INFO("step " << step << ", parameter " << i);
      REQUIRE(params[i].grad().defined());
      CHECK(at::equal(params[i].grad(), reference[i].grad()));
    }
    CHECK_FALSE(params[2].grad().defined());
  }
}
