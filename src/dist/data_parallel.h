// Data parallelism over a LibTorch c10d process group (DESIGN.md §2): rendezvous through a
// TCPStore served by rank 0 at MASTER_ADDR:MASTER_PORT, a check that every rank runs the same
// config, then ProcessGroupGloo (CPU tensors) or ProcessGroupNCCL (CUDA tensors, QLT_CUDA
// builds). The trainer sums the trainable gradients over the ranks with it; the frozen base is
// never communicated.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "dist/dist_env.h"

namespace qlt::dist {

// Gradients are summed in buckets of at most this many bytes, each flattened into one buffer
// (one collective per bucket; DDP's default bucket size).
inline constexpr int64_t kBucketBytes = 25 << 20;

class DataParallel {
 public:
  // Joins the job described by `env`. `backend`: "gloo" or "nccl" (the trainer resolves
  // training.distributed "auto" from the device). `timeout` bounds the rendezvous and every
  // collective: when a rank dies, the others fail within it. `config_hash` identifies the
  // effective config; ranks started with different ones all exit with UserError naming the two
  // ranks. UserError too when MASTER_ADDR:MASTER_PORT cannot be reached within `timeout`, or
  // for "nccl" in a build without CUDA.
  static std::unique_ptr<DataParallel> join(const DistEnv& env, const std::string& backend,
                                            std::chrono::milliseconds timeout,
                                            const std::string& config_hash);
  ~DataParallel();

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const std::string& backend() const { return backend_; }

  // Sums `tensors` over the ranks in place: every rank passes the same list (names, shapes,
  // dtypes; the trainable gradients), in buckets of <= kBucketBytes of one dtype.
  // Collectives that fail (a rank died: Gloo notices at once, NCCL within the timeout) throw
  // RuntimeError naming this rank and what failed.
  void all_reduce_sum(const std::vector<at::Tensor>& tensors);
  // Starts the sum of `flat` (one buffer, on any device) over the ranks, in place; wait() for
  // it before reading `flat` (OverlappedAllReduce: started during backward).
  c10::intrusive_ptr<c10d::Work> start_all_reduce(at::Tensor& flat);
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what);
  // Every rank's `value`, in rank order.
  std::vector<double> all_gather(double value);
  void barrier();

 private:
  DataParallel() = default;
  void all_reduce_flat(at::Tensor& flat);
  // Runs `run` (a collective); any failure becomes a RuntimeError naming this rank and `what`.
  template <typename F>
  void collective(const char* what, F&& run);

  DistEnv env_;
  std::string backend_;
  at::Device device_{at::kCPU};  // where collective buffers live (CUDA for NCCL)
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> group_;
};

}  // namespace qlt::dist
