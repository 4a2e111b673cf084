// CPU throughput of the NF4 reference (src/quant/nf4.cpp): quantize (with and without double
// quant) and dequantize to bf16 / fp32 of one weight, default 4096x11008 bf16 (a Llama-7B MLP
// projection), next to a plain copy of the same dense tensor measured in the same run.
// Bandwidth counts bytes read + written: dense input/output + packed codes + scales.
//
//   qlt_cpu_bench [--rows 4096] [--cols 11008] [--block 64] [--iters 5] [--threads 0]
// (scripts/bench/cpu_nf4.sh builds and runs it.)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "quant/nf4.h"

namespace {

// Median seconds per call of fn over `iters` calls, after one warm-up call.
double median_seconds(const std::function<void()>& fn, int iters) {
  fn();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void report(const char* what, double seconds, double bytes, double params) {
  fmt::print("  {:<34} {:8.2f} ms  {:7.2f} GB/s  {:8.1f} Mparam/s\n", what, seconds * 1e3,
             bytes / seconds / 1e9, params / seconds / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CPU NF4 quantize/dequantize throughput"};
  int64_t rows = 4096, cols = 11008, block = 64;
  int iters = 5, threads = 0;
  app.add_option("--rows", rows)->capture_default_str();
  app.add_option("--cols", cols)->capture_default_str();
  app.add_option("--block", block)->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str();
  app.add_option("--threads", threads, "0 = LibTorch's default")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) at::set_num_threads(threads);

  at::manual_seed(0);
  const at::Tensor w = (at::randn({rows, cols}) * 0.02).to(at::kBFloat16);
  const double n = static_cast<double>(w.numel());
  fmt::print("weight [{}, {}] bf16 ({:.1f} MB), block {}, {} threads, median of {} runs\n", rows,
             cols, w.nbytes() / 1e6, block, at::get_num_threads(), iters);

  at::Tensor copy = at::empty_like(w);
  report("copy bf16 -> bf16 (reference)", median_seconds([&] { copy.copy_(w); }, iters),
         2.0 * w.nbytes(), n);

  for (bool dq : {true, false}) {
    const qlt::quant::Nf4Options options{block, dq};
    qlt::quant::Nf4Tensor q;
    const double s = median_seconds([&] { q = qlt::quant::quantize_nf4(w, options); }, iters);
    const double nf4_bytes = static_cast<double>(q.storage_bytes());
    report(dq ? "quantize bf16 -> nf4 (double quant)" : "quantize bf16 -> nf4", s,
           w.nbytes() + nf4_bytes, n);
    for (auto dtype : {at::kBFloat16, at::kFloat}) {
      at::Tensor out = at::empty({rows, cols}, dtype);
      const double d = median_seconds([&] { qlt::quant::dequantize_nf4_into(q, out); }, iters);
      report(fmt::format("dequantize nf4{} -> {}", dq ? " (dq)" : "",
                         dtype == at::kFloat ? "fp32" : "bf16")
                 .c_str(),
             d, nf4_bytes + out.nbytes(), n);
    }
  }
  return 0;
}
