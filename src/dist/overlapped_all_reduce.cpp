#include "dist/overlapped_all_reduce.h"

namespace qlt::dist {

OverlappedAllReduce::OverlappedAllReduce(DataParallel& dp, const std::vector<at::Tensor>& params)
    : dp_(dp), params_(params) {
  bucket_of_.resize(params_.size());
  slot_of_.resize(params_.size());
  arrivals_.assign(params_.size(), 0);
  // Reverse order, one dtype per bucket, <= kBucketBytes (at least one member).
  int64_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k];
    const auto size = static_cast<int64_t>(p.nbytes());
    if (buckets_.empty() || bytes + size > kBucketBytes ||
        params_[buckets_.back().members.front()].scalar_type() != p.scalar_type()) {
      buckets_.emplace_back();
      bytes = 0;
    }
    bucket_of_[k] = buckets_.size() - 1;
    slot_of_[k] = buckets_.back().members.size();
    buckets_.back().members.push_back(k);
    bytes += size;
  }
  for (auto& b : buckets_) b.totals.resize(b.members.size());
  for (size_t k = 0; k < params_.size(); ++k) {
    params_[k].register_hook([self = self_, k](const at::Tensor& grad) {
      if (*self != nullptr) (*self)->on_gradient(k, grad);
    });
  }
}

OverlappedAllReduce::~OverlappedAllReduce() {
  const std::lock_guard<std::mutex> lock(mutex_);
  *self_ = nullptr;
}

void OverlappedAllReduce::arm() {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (auto& b : buckets_) {
    for (auto& t : b.totals) t = at::Tensor();
    b.ready = 0;
    b.from_grads = false;
    b.flat = at::Tensor();
    b.work.reset();
  }
  arrivals_.assign(params_.size(), 0);
  armed_ = true;
}

void OverlappedAllReduce::on_gradient(size_t param, const at::Tensor& grad) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) return;
  Bucket& b = buckets_[bucket_of_[param]];
  // The hook runs before the engine adds `grad` into .grad: the step's total is the sum of
  // the earlier micro-batches' gradient and this one (the same single addition the engine
  // makes).
  const at::Tensor& earlier = params_[param].grad();
  at::Tensor total = earlier.defined() ? earlier + grad : grad.clone();
  if (++arrivals_[param] > 1) {
    // A parameter used twice in the graph: its total is only known after backward, so finish()
    // sums this bucket again from .grad (the same on every rank: the graphs are the same).
    b.from_grads = true;
    return;
  }
  b.totals[slot_of_[param]] = std::move(total);
  if (++b.ready == b.members.size()) launch(b);
}

void OverlappedAllReduce::launch(Bucket& b) {
  std::vector<at::Tensor> parts;
  for (size_t s = 0; s < b.members.size(); ++s) {
    const at::Tensor& p = params_[b.members[s]];
    const at::Tensor& t = b.totals[s];
    parts.push_back(t.defined() ? t.reshape({-1}) : at::zeros({p.numel()}, p.options()));
  }
  b.flat = at::cat(parts);  // [sum of the members' numels]
  b.work = dp_.start_all_reduce(b.flat);
}

void OverlappedAllReduce::finish() {
  const std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  for (auto& b : buckets_) {
    if (b.from_grads) {  // a member used twice: sum the totals that .grad now holds
      if (b.work) dp_.wait(b.work, "all-reduce of the gradients");  // started too early
      for (size_t s = 0; s < b.members.size(); ++s) {
        const at::Tensor& g = params_[b.members[s]].grad();
        b.totals[s] = g.defined() ? g.clone() : at::Tensor();
      }
      launch(b);
    } else if (!b.work) {
      launch(b);  // incomplete: members without a gradient count as zeros
    }
  }
  for (auto& b : buckets_) {
    dp_.wait(b.work, "all-reduce of the gradients");
    int64_t offset = 0;
    for (size_t s = 0; s < b.members.size(); ++s) {
      at::Tensor& p = params_[b.members[s]];
      const int64_t n = p.numel();
      if (p.grad().defined()) p.mutable_grad().copy_(b.flat.narrow(0, offset, n).view(p.sizes()));
      offset += n;
    }
    b.work.reset();
    b.flat = at::Tensor();
    for (auto& t : b.totals) t = at::Tensor();
  }
}

}  // namespace qlt::dist
