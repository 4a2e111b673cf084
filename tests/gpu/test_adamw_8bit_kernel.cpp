// The fused 8-bit AdamW kernel (kernels/adamw_8bit.cu) against the CPU reference
// optim::AdamW8bit (bit-identical to bitsandbytes 0.50.2's CPU AdamW8bit), step by step:
//   - codes (state1, state2) and absmax (absmax1, absmax2): exactly, every step;
//   - the parameter: within the bound of kernels/adamw_8bit.cu / METHODS.md §7. LibTorch's CPU
//     fp32 sqrt is faithfully, not correctly, rounded; sqrt enters only the denominator d, so per
//     step the update u = (step_size * m) / d differs by at most ~6 * 2^-24 relative (bounded
//     here by 2^-20 |u|) and the two roundings of p (decay, sum) by an ulp each (2^-22 (|p_k| +
//     |p_k-1|)); the difference carries over to the next step unchanged (decay <= 1). So
//       |p_gpu - p_cpu| <= sum over steps k of 2^-20 |u_k| + 2^-22 (|p_k| + |p_k-1|) + 2^-149,
//     with u_k = p_k - decay * p_k-1 of the CPU run (the update it applied).
// Sizes: tiny (1, 255, 256, 257), both sides of the 4096 fp32 boundary, n not a multiple of 4
// (scalar tail), a misaligned copy (the kernel's scalar path), 2^20 and a 4096 x 11008 one.
// The kernel is called on raw cudaMalloc buffers with min_8bit_size 0 on the CPU side, so every
// size goes through it; in QLT_CUDA builds AdamW8bit itself also runs on CUDA parameters
// (default min_8bit_size: the fp32 path on CUDA is ATen ops, compared by normalized error).
#include <ATen/ATen.h>
#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "kernels.h"
#include "optim/adamw_8bit.h"
#include "optim/blockwise_8bit.h"

namespace {

namespace k = qlt::kernels;
namespace optim = qlt::optim;

class AdamBuffer {  // cudaMalloc'd bytes, freed on scope exit
 public:
  explicit AdamBuffer(size_t bytes) {
    if (bytes > 0) QLT_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~AdamBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  AdamBuffer(const AdamBuffer&) = delete;
  AdamBuffer& operator=(const AdamBuffer&) = delete;
  template <typename T>
  T* at(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
};

struct AdamStream {
  cudaStream_t s = nullptr;
  AdamStream() { QLT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~AdamStream() { cudaStreamDestroy(s); }
};

void to_device(void* dst, const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  if (c.nbytes() > 0)
    QLT_CUDA_CHECK(cudaMemcpy(dst, c.const_data_ptr(), c.nbytes(), cudaMemcpyHostToDevice));
}

at::Tensor to_host(const void* src, int64_t n, at::ScalarType dtype, cudaStream_t stream) {
  QLT_CUDA_CHECK(cudaStreamSynchronize(stream));
  at::Tensor t = at::empty({n}, dtype);
  if (t.nbytes() > 0)
    QLT_CUDA_CHECK(cudaMemcpy(t.mutable_data_ptr(), src, t.nbytes(), cudaMemcpyDeviceToHost));
  return t;
}

// The maps and LUTs the CPU optimizer builds, on the device.
struct AdamTables {
  optim::QuantLut s_lut = optim::build_quant_lut(optim::create_dynamic_map(true));
  optim::QuantLut u_lut = optim::build_quant_lut(optim::create_dynamic_map(false));
  AdamBuffer buf{2 * (256 * sizeof(float) + 65536)};
  k::AdamW8bitTables view;
  AdamTables() {
    float* maps = buf.at<float>();
    uint8_t* luts = buf.at<uint8_t>(2 * 256 * sizeof(float));
    to_device(maps, s_lut.map);
    to_device(maps + 256, u_lut.map);
    QLT_CUDA_CHECK(cudaMemcpy(luts, s_lut.index.data(), 65536, cudaMemcpyHostToDevice));
    QLT_CUDA_CHECK(cudaMemcpy(luts + 65536, u_lut.index.data(), 65536, cudaMemcpyHostToDevice));
    view = {maps, luts, maps + 256, luts + 65536};
  }
};

// One parameter's buffers; `misalign` shifts every pointer off the vector path's alignment
// (fp32 by 4 bytes, codes by 1 byte).
struct AdamDeviceParam {
  int64_t n;
  size_t shift_f, shift_b;
  AdamBuffer param, grad, state1, state2, absmax1, absmax2;
  k::AdamW8bitState view;
  AdamDeviceParam(int64_t n_, bool misalign)
      : n(n_),
        shift_f(misalign ? 4 : 0),
        shift_b(misalign ? 1 : 0),
        param(n_ * 4 + 16),
        grad(n_ * 4 + 16),
        state1(n_ + 16),
        state2(n_ + 16),
        absmax1(optim::state_blocks(n_) * 4 + 16),
        absmax2(optim::state_blocks(n_) * 4 + 16) {
    view = {param.at<float>(shift_f),
            grad.at<float>(shift_f),
            state1.at<uint8_t>(shift_b),
            state2.at<uint8_t>(shift_b),
            absmax1.at<float>(shift_f),
            absmax2.at<float>(shift_f),
            n};
    // bnb init_state: zero codes and absmax.
    QLT_CUDA_CHECK(cudaMemset(view.state1, 0, n));
    QLT_CUDA_CHECK(cudaMemset(view.state2, 0, n));
    QLT_CUDA_CHECK(cudaMemset(view.absmax1, 0, optim::state_blocks(n) * 4));
    QLT_CUDA_CHECK(cudaMemset(view.absmax2, 0, optim::state_blocks(n) * 4));
  }
};

optim::AdamWOptions adam_options() {
  optim::AdamWOptions o;  // bitsandbytes' fixture settings (tests/optim/test_adamw_8bit.cpp)
  o.beta1 = 0.9;
  o.beta2 = 0.995;
  o.eps = 1e-8;
  o.weight_decay = 0.01;
  return o;
}

// A gradient with a wide dynamic range; at step 1 the first block is all zero (absmax 0).
at::Tensor adam_grad(int64_t n, int step) {
  auto g = at::randn({n}) * 1e-3 * at::exp(at::randn({n}));
  if (step == 1 && n >= 512) g.slice(0, 0, 256).zero_();
  return g;
}

// "" when equal bit for bit, else the count of differing elements.
std::string exact_diff(const at::Tensor& gpu, const at::Tensor& cpu) {
  const auto a = gpu.contiguous().view(-1), b = cpu.contiguous().view(-1);
  const auto ne = a.scalar_type() == at::kFloat ? a.view(at::kInt).ne(b.view(at::kInt)) : a.ne(b);
  const int64_t bad = ne.sum().item<int64_t>();
  return bad == 0 ? "" : std::to_string(bad) + " of " + std::to_string(a.numel()) + " differ";
}

// Runs `steps` steps on the CPU reference and through the kernel, comparing after each.
void compare_with_reference(int64_t n, bool weight_decay, int steps, bool misalign) {
  INFO("n " << n << ", weight decay " << weight_decay << ", misaligned " << misalign);
  at::manual_seed(static_cast<uint64_t>(n) * 2 + weight_decay);
  const auto p0 = at::randn({n}) * 0.02;
  auto leaf = p0.clone().set_requires_grad(true);
  const auto options = adam_options();
  optim::AdamW8bit cpu({{"w", leaf}}, options,
                       weight_decay ? std::set<std::string>{} : std::set<std::string>{"w"},
                       /*min_8bit_size=*/0);
  static AdamTables tables;
  AdamStream stream;
  AdamDeviceParam gpu(n, misalign);
  to_device(gpu.view.param, p0);

  auto tol = at::zeros({n}, at::kDouble);
  at::Tensor prev = p0.to(at::kDouble);
  for (int step = 1; step <= steps; ++step) {
    INFO("step " << step);
    const double lr = 2e-3 / step;
    const auto g = adam_grad(n, step);
    leaf.mutable_grad() = g;
    cpu.step(lr);
    cpu.zero_grad();
    to_device(const_cast<float*>(gpu.view.grad), g);
    const auto sc =
        optim::adamw_8bit_scalars(options, step, lr, weight_decay ? options.weight_decay : 0.0);
    k::AdamW8bitScalars ks{sc.beta1,
                           sc.one_minus_beta1,
                           sc.beta2,
                           sc.one_minus_beta2,
                           sc.correction2,
                           sc.eps,
                           sc.decay_applies ? sc.decay : 1.0,
                           sc.step_size};
    k::adamw_8bit_update(gpu.view, tables.view, ks, stream.s);

    const auto& ref = cpu.params()[0];
    REQUIRE(ref.quantized);
    CHECK(exact_diff(to_host(gpu.view.state1, n, at::kByte, stream.s), ref.state1) == "");
    CHECK(exact_diff(to_host(gpu.view.state2, n, at::kByte, stream.s), ref.state2) == "");
    const int64_t blocks = optim::state_blocks(n);
    CHECK(exact_diff(to_host(gpu.view.absmax1, blocks, at::kFloat, stream.s), ref.absmax1) == "");
    CHECK(exact_diff(to_host(gpu.view.absmax2, blocks, at::kFloat, stream.s), ref.absmax2) == "");

    const auto p_cpu = ref.param.detach().to(at::kDouble);
    const auto p_gpu = to_host(gpu.view.param, n, at::kFloat, stream.s).to(at::kDouble);
    const double decay = static_cast<float>(ks.decay);
    tol += std::ldexp(1.0, -20) * (p_cpu - prev * decay).abs() +
           std::ldexp(1.0, -22) * (p_cpu.abs() + prev.abs()) + std::ldexp(1.0, -149);
    const auto diff = (p_gpu - p_cpu).abs();
    const int64_t over = diff.gt(tol).sum().item<int64_t>();
    INFO("param: " << exact_diff(p_gpu.to(at::kFloat), ref.param.detach()) << " (not exact); "
                   << over << " beyond the bound; max |diff| " << diff.max().item<double>());
    CHECK(over == 0);
    prev = p_cpu;
  }
}

}  // namespace

TEST_CASE("GPU 8-bit AdamW: codes and absmax bit-exact, param within one rounding per step",
          "[gpu][adamw8bit]") {
  for (int64_t n :
       {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{4095}, int64_t{4096},
        int64_t{4097}, int64_t{4100}, int64_t{65539}, int64_t{1} << 20}) {
    for (bool decay : {true, false}) compare_with_reference(n, decay, /*steps=*/4, false);
  }
}

TEST_CASE("GPU 8-bit AdamW: misaligned buffers take the scalar path, same results",
          "[gpu][adamw8bit]") {
  for (int64_t n : {int64_t{4100}, int64_t{65539}})
    compare_with_reference(n, true, /*steps=*/3, /*misalign=*/true);
}

TEST_CASE("GPU 8-bit AdamW: a 4096 x 11008 parameter", "[gpu][adamw8bit]") {
  compare_with_reference(int64_t{4096} * 11008, true, /*steps=*/2, false);
}

TEST_CASE("GPU 8-bit AdamW: adamw_8bit_update validates its arguments", "[gpu][adamw8bit]") {
  AdamStream stream;
  AdamDeviceParam p(512, false);
  AdamTables tables;
  const k::AdamW8bitScalars ok{0.9, 0.1, 0.995, 0.005, 0.1, 1e-8, 1.0, -1e-3};
  auto throws = [&](k::AdamW8bitState st, k::AdamW8bitTables tb, k::AdamW8bitScalars sc,
                    const std::string& what) {
    INFO(what);
    try {
      k::adamw_8bit_update(st, tb, sc, stream.s);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      CHECK(msg.find("adamw_8bit_update") != std::string::npos);
      CHECK(msg.find(what) != std::string::npos);
    }
  };
  auto st = p.view;
  st.n = -1;
  throws(st, tables.view, ok, "state.n = -1 < 0");
  st = p.view;
  st.param = nullptr;
  throws(st, tables.view, ok, "state.param is null");
  st = p.view;
  st.absmax2 = nullptr;
  throws(st, tables.view, ok, "state.absmax2 is null");
  auto tb = tables.view;
  tb.unsigned_lut = nullptr;
  throws(p.view, tb, ok, "tables.unsigned_lut is null");
  auto sc = ok;
  sc.eps = INFINITY;
  throws(p.view, tables.view, sc, "scalars.eps");
  sc = ok;
  sc.step_size = 1e300;  // finite in double, not in fp32
  throws(p.view, tables.view, sc, "scalars.step_size");
  sc = ok;
  sc.correction2 = 0.0;
  throws(p.view, tables.view, sc, "scalars.correction2");
  // n == 0 is a no-op, null pointers included.
  CHECK_NOTHROW(k::adamw_8bit_update(k::AdamW8bitState{}, k::AdamW8bitTables{}, ok, stream.s));
  QLT_CUDA_CHECK(cudaStreamSynchronize(stream.s));
}

#if defined(QLT_WITH_CUDA)
// The optimizer itself on CUDA parameters (adamw_8bit_cuda.cpp: device tables, stream, guard),
// with the default min_8bit_size: 4095 elements keep fp32 state (ATen ops on CUDA, whose
// roundings are CUDA's: normalized error), the others go through the kernel.
TEST_CASE("GPU 8-bit AdamW: AdamW8bit on CUDA parameters follows the CPU reference",
          "[gpu][adamw8bit]") {
  at::manual_seed(7);
  const std::vector<std::vector<int64_t>> shapes = {{4095}, {64, 64}, {4097}, {96, 130}};
  std::vector<std::pair<std::string, at::Tensor>> on_cpu, on_gpu;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto v = at::randn(shapes[i]) * 0.02;
    on_cpu.emplace_back("p" + std::to_string(i), v.clone().set_requires_grad(true));
    on_gpu.emplace_back("p" + std::to_string(i), v.to(at::kCUDA).set_requires_grad(true));
  }
  optim::AdamW8bit cpu(on_cpu, adam_options(), {"p1"});
  optim::AdamW8bit gpu(on_gpu, adam_options(), {"p1"});
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto g = adam_grad(on_cpu[i].second.numel(), step).view(shapes[i]);
      on_cpu[i].second.mutable_grad() = g;
      on_gpu[i].second.mutable_grad() = g.to(at::kCUDA);
    }
    cpu.step(1e-3);
    gpu.step(1e-3);
  }
  auto normalized = [](const at::Tensor& a, const at::Tensor& b) {
    const double scale = b.abs().max().item<double>();
    return (a.cpu() - b).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
  };
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto& c = cpu.params()[i];
    const auto& g = gpu.params()[i];
    INFO(c.name << " " << c.param.sizes());
    REQUIRE(g.param.is_cuda());
    REQUIRE(g.state1.is_cuda());
    CHECK(c.quantized == (c.param.numel() >= optim::kMin8bitSize));
    CHECK(normalized(g.param.detach(), c.param.detach()) < 1e-6);
    if (c.quantized) {
      CHECK(exact_diff(g.state1.cpu(), c.state1) == "");
      CHECK(exact_diff(g.state2.cpu(), c.state2) == "");
      CHECK(exact_diff(g.absmax1.cpu(), c.absmax1) == "");
      CHECK(exact_diff(g.absmax2.cpu(), c.absmax2) == "");
    } else {
      CHECK(normalized(g.state1, c.state1) < 1e-5);
      CHECK(normalized(g.state2, c.state2) < 1e-5);
    }
  }
}
#endif
