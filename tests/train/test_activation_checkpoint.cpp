// Activation checkpointing: gradients with and without it are bitwise identical (a 2-layer
// toy block with matmuls, silu, a frozen weight and generator-driven dropout), the generator
// stream after backward is unchanged, and x without grad still gives parameter grads. The
// memory saving is measured by counting every CPU tensor allocation (a wrapping allocator
// installed with c10::SetCPUAllocator): peak bytes live during forward + backward.
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/CPUAllocator.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>

#include "train/activation_checkpoint.h"

namespace {

constexpr double kKeep = 0.9;  // dropout keep probability

// One toy decoder-like layer: h + W2 dropout(silu(W1 h + Wf h)), Wf frozen.
struct Layer {
  at::Tensor w1, w2;  // [ff, d], [d, ff] fp32, trainable leaves
  at::Tensor frozen;  // [ff, d] fp32, no grad
};

std::vector<Layer> make_layers(int n, int64_t d, int64_t ff, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<Layer> layers;
  for (int i = 0; i < n; ++i) {
    layers.push_back({(at::randn({ff, d}, gen) * 0.05).set_requires_grad(true),
                      (at::randn({d, ff}, gen) * 0.05).set_requires_grad(true),
                      at::randn({ff, d}, gen) * 0.05});
  }
  return layers;
}

at::Tensor layer_forward(const Layer& l, const at::Tensor& h, at::Generator& gen) {
  auto a = at::silu(at::linear(h, l.w1) + at::linear(h, l.frozen));  // [T, ff]
  auto mask = at::empty_like(a).bernoulli_(kKeep, gen);              // [T, ff], 0/1
  return h + at::linear(a * mask / kKeep, l.w2);                     // [T, d]
}

// Runs the stack (optionally checkpointing each layer), backpropagates a fixed loss, and
// returns the grads of x0 (when it requires grad) and of every trainable weight, in order.
std::vector<at::Tensor> run_layers(const std::vector<Layer>& layers, const at::Tensor& x0,
                                   uint64_t dropout_seed, bool checkpoint) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(dropout_seed);
  auto h = x0 * 2.0;  // a non-leaf input, like an embedding output
  for (const auto& l : layers) {
    auto fn = [&l, &gen](const at::Tensor& x) { return layer_forward(l, x, gen); };
    h = checkpoint ? qlt::train::checkpointed(fn, h, {l.w1, l.w2}, gen) : fn(h);
  }
  auto target = at::linspace(-1, 1, h.numel()).view(h.sizes());
  torch::autograd::backward({(h * target).sum()});
  std::vector<at::Tensor> grads;
  if (x0.requires_grad()) grads.push_back(x0.grad());
  for (const auto& l : layers) {
    grads.push_back(l.w1.grad());
    grads.push_back(l.w2.grad());
    REQUIRE_FALSE(l.frozen.grad().defined());
  }
  // The generator continues where the plain run leaves it: draw once more and report it.
  grads.push_back(at::rand({4}, gen));
  return grads;
}

void require_bitwise_equal_outputs(const std::vector<at::Tensor>& a,
                                   const std::vector<at::Tensor>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << i);
    REQUIRE(a[i].defined());
    REQUIRE(b[i].defined());
    CHECK(at::equal(a[i], b[i]));
  }
}

std::vector<Layer> clone_layers(const std::vector<Layer>& layers) {
  std::vector<Layer> out;
  for (const auto& l : layers) {
    out.push_back({l.w1.detach().clone().set_requires_grad(true),
                   l.w2.detach().clone().set_requires_grad(true), l.frozen});
  }
  return out;
}

}  // namespace

TEST_CASE("checkpointed gradients are bitwise identical to the plain graph's",
          "[train][activation_checkpoint]") {
  const auto layers = make_layers(2, 16, 48, 7);
  auto x0 = at::randn({2, 5, 16}, at::make_generator<at::CPUGeneratorImpl>(3));
  auto x_plain = x0.clone().set_requires_grad(true);
  auto x_ckpt = x0.clone().set_requires_grad(true);
  const auto plain = run_layers(clone_layers(layers), x_plain, 11, false);
  const auto ckpt = run_layers(clone_layers(layers), x_ckpt, 11, true);
  require_bitwise_equal_outputs(plain, ckpt);
  // Dropout really dropped something, so the replay of its masks was tested.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  CHECK(at::empty({5, 48}).bernoulli_(kKeep, gen).min().item<float>() == 0.0f);
}

TEST_CASE("checkpointing an input without grad still gives the parameters their grads",
          "[train][activation_checkpoint]") {
  const auto layers = make_layers(2, 16, 48, 8);
  auto x0 = at::randn({7, 16}, at::make_generator<at::CPUGeneratorImpl>(4));
  const auto plain = run_layers(clone_layers(layers), x0, 12, false);
  const auto ckpt = run_layers(clone_layers(layers), x0, 12, true);
  REQUIRE(plain.size() == 2 * 2 + 1);
  require_bitwise_equal_outputs(plain, ckpt);
}

TEST_CASE("checkpointed keeps no graph inside the block and accumulates like autograd",
          "[train][activation_checkpoint]") {
  auto w = at::full({3}, 2.0f).set_requires_grad(true);
  auto x = at::ones({3}).set_requires_grad(true);
  auto fn = [&w](const at::Tensor& t) { return (t * w).exp(); };
  auto y = qlt::train::checkpointed(fn, x, {w});
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->name().find("CheckpointFunction") != std::string::npos);
  CHECK(y.grad_fn()->next_edges().size() == 2);  // x and w: nothing recorded inside fn
  y.sum().backward();
  auto g = w.grad().clone();
  qlt::train::checkpointed(fn, x, {w}).sum().backward();  // second backward adds, as autograd
  CHECK(at::equal(w.grad(), g * 2));
  CHECK(at::allclose(x.grad(), 2 * (2 * at::exp(at::full({3}, 2.0f)))));
}

namespace {

// Counts the bytes of every CPU allocation made while installed; peak = most bytes live at
// once. Wraps the default allocator (each allocation still comes from it).
struct CountingAllocator final : c10::Allocator {
  c10::Allocator* base = nullptr;
  std::atomic<int64_t> live{0}, peak{0};

  struct Block {
    c10::DataPtr inner;
    int64_t bytes;
    CountingAllocator* owner;
  };
  static void release(void* ctx) {
    auto* block = static_cast<Block*>(ctx);
    block->owner->live -= block->bytes;
    delete block;
  }
  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr inner = base->allocate(n);
    void* data = inner.get();
    const auto device = inner.device();
    const int64_t now = live += static_cast<int64_t>(n);
    int64_t seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    return {data, new Block{std::move(inner), static_cast<int64_t>(n), this}, &release, device};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

// Peak bytes allocated above the starting level during forward + backward of `layers`.
int64_t peak_training_bytes(int n_layers, int64_t tokens, int64_t d, int64_t ff, bool checkpoint) {
  // Never freed: tensors allocated through it may outlive the measurement.
  static auto* counter = new CountingAllocator();
  const auto layers = make_layers(n_layers, d, ff, 1);
  auto x0 = at::randn({tokens, d}, at::make_generator<at::CPUGeneratorImpl>(2));
  counter->base = c10::GetCPUAllocator();
  constexpr uint8_t kPriority = 100;  // above the default allocator's registration (0)
  c10::SetCPUAllocator(counter, kPriority);
  const int64_t start = counter->live.load();
  counter->peak = start;
  run_layers(layers, x0, 3, checkpoint);
  const int64_t peak = counter->peak.load() - start;
  c10::SetCPUAllocator(counter->base, kPriority);
  return peak;
}

}  // namespace

TEST_CASE("checkpointing lowers the peak of live tensor bytes", "[train][activation_checkpoint]") {
  const int64_t plain = peak_training_bytes(6, 256, 64, 256, false);
  const int64_t ckpt = peak_training_bytes(6, 256, 64, 256, true);
  INFO("peak bytes: plain " << plain << ", checkpointed " << ckpt);
  CHECK(ckpt < plain / 2);
}

// Hidden benchmark: OMP_NUM_THREADS=1 ./build/tests/qlt_tests '[checkpoint_memory]'
TEST_CASE("activation checkpoint memory bench", "[.bench][checkpoint_memory]") {
  constexpr int kLayers = 16;
  constexpr int64_t kTokens = 1024, kHidden = 256, kFf = 1024;
  const int64_t plain = peak_training_bytes(kLayers, kTokens, kHidden, kFf, false);
  const int64_t ckpt = peak_training_bytes(kLayers, kTokens, kHidden, kFf, true);
  const int64_t weights = kLayers * 3 * kHidden * kFf * 4;
  std::printf(
      "activation checkpointing, %d layers, tokens %ld, hidden %ld, ff %ld (weights %.1f MiB, "
      "not counted: allocated before):\n  peak live tensor bytes during forward+backward: "
      "plain %.1f MiB, checkpointed %.1f MiB (%.2fx less)\n",
      kLayers, static_cast<long>(kTokens), static_cast<long>(kHidden), static_cast<long>(kFf),
      weights / 1048576.0, plain / 1048576.0, ckpt / 1048576.0,
      static_cast<double>(plain) / static_cast<double>(ckpt));
  CHECK(ckpt < plain);
}
