// The gradient all-reduce overlapped with backward (DDP's bucketing, for our trainer): the
// trainable parameters are split into buckets of <= kBucketBytes in reverse parameter order
// (backward produces the last layers' gradients first). During the last micro-batch's backward
// of a step, a hook on each parameter sees its gradient arrive; the step's total for it (the
// earlier micro-batches' .grad plus this one) goes into its bucket, and a full bucket's sum
// over the ranks starts at once, asynchronously, while backward goes on. finish() starts the
// buckets left (parameters that got no gradient count as zeros there, and keep no gradient),
// waits for all, and writes the sums into .grad. The buckets and their order are the same on
// every rank and every step, so the result is bit-identical between runs and equal to the
// plain all_reduce_sum of the same gradients.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <mutex>
#include <vector>

#include "dist/data_parallel.h"

namespace qlt::dist {

class OverlappedAllReduce {
 public:
  // `params`: the trainable leaves, in the trainer's order; the hooks stay registered for the
  // life of the parameters, and do nothing unless armed. `dp` must outlive this object.
  OverlappedAllReduce(DataParallel& dp, const std::vector<at::Tensor>& params);
  // The hooks outlive this object (they belong to the parameters); they are disarmed here.
  ~OverlappedAllReduce();
  OverlappedAllReduce(const OverlappedAllReduce&) = delete;
  OverlappedAllReduce& operator=(const OverlappedAllReduce&) = delete;

  // Before the backward of this rank's last micro-batch of the step.
  void arm();
  // After it: the summed gradients are in .grad (parameters without a gradient keep none).
  void finish();

  // The number of buckets (tests, logs).
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    std::vector<size_t> members;     // parameter indices, in bucket order
    std::vector<at::Tensor> totals;  // the step's gradient of each member (undefined: none yet)
    size_t ready = 0;                // members with a total
    bool from_grads = false;         // a member's gradient came in twice: summed again from .grad
    at::Tensor flat;                 // the concatenated totals being reduced
    c10::intrusive_ptr<c10d::Work> work;  // the all-reduce in flight
  };
  void on_gradient(size_t param, const at::Tensor& grad);
  void launch(Bucket& bucket);

  DataParallel& dp_;
  std::vector<at::Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per parameter
  std::vector<size_t> slot_of_;    // per parameter: its index in its bucket
  std::vector<int> arrivals_;      // per parameter: hook calls since arm()
  bool armed_ = false;
  std::mutex mutex_;  // hooks run on the autograd engine's threads
  // What the hooks call through: this object, or null once it is gone.
  std::shared_ptr<OverlappedAllReduce*> self_ = std::make_shared<OverlappedAllReduce*>(this);
};

}  // namespace qlt::dist
