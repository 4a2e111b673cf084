// ProcessGroupGloo.hpp declares its class only under USE_C10D_GLOO (LibTorch's own build
// defines it; the wheel's headers need gloo's, from Debian's libgloo-dev). This file is kept
// out of the unity build (CMakeLists.txt) so the macros stay here.
#define USE_C10D_GLOO 1
// NCCL: CUDA builds where the CUDA toolkit has nccl.h (the GPU machine's python torch carries
// it in site-packages/nvidia/nccl/include: scripts/gpu-check.sh adds that to CPATH).
#if defined(QLT_WITH_CUDA) && __has_include(<nccl.h>)
#define USE_C10D_NCCL 1
#define QLT_HAVE_NCCL 1
#endif

#include "dist/data_parallel.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#if defined(QLT_HAVE_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "core/errors.h"

namespace qlt::dist {
namespace {

const char* kConfigKeyPrefix = "qlt/config_hash/";
const char* kCheckedKeyPrefix = "qlt/config_checked/";

// LibTorch's messages carry a C++ backtrace after the first line.
std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// The config hash of every rank, compared with this rank's: all ranks see the same table, so
// all of them stop with the same message. Rank 0 serves the store, so it leaves only after
// every rank has read the table (each says so with a key).
void check_same_config(c10d::Store& store, const DistEnv& env, const std::string& hash) {
  store.set(kConfigKeyPrefix + std::to_string(env.rank),
            std::vector<uint8_t>(hash.begin(), hash.end()));
  std::string mismatch;
  for (int r = 0; r < env.world_size && mismatch.empty(); ++r) {
    const auto bytes = store.get(kConfigKeyPrefix + std::to_string(r));
    const std::string other(bytes.begin(), bytes.end());
    if (other != hash) {
      mismatch = fmt::format(
          "rank {} was started with a different config than rank {} (config hashes {} and "
          "{}); start every rank with the same config file and the same --set options",
          r, env.rank, other.substr(0, 12), hash.substr(0, 12));
    }
  }
  store.set(kCheckedKeyPrefix + std::to_string(env.rank), std::vector<uint8_t>{1});
  if (env.rank == 0) {
    std::vector<std::string> keys;
    for (int r = 0; r < env.world_size; ++r) keys.push_back(kCheckedKeyPrefix + std::to_string(r));
    store.wait(keys);
  }
  if (!mismatch.empty()) user_error("{}", mismatch);
}

}  // namespace

std::unique_ptr<DataParallel> DataParallel::join(const DistEnv& env, const std::string& backend,
                                                 std::chrono::milliseconds timeout,
                                                 const std::string& config_hash) {
  std::unique_ptr<DataParallel> dp(new DataParallel());
  dp->env_ = env;
  dp->backend_ = backend;
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0;
    options.numWorkers = env.world_size;
    options.waitWorkers = true;
    options.timeout = timeout;
    dp->store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
  } catch (const c10::Error& e) {
    user_error(
        "rank {} of {}: cannot rendezvous at MASTER_ADDR:MASTER_PORT {} within {} s ({}); start "
        "rank 0 there (it serves the store), check MASTER_ADDR / MASTER_PORT and the firewall, "
        "or raise training.distributed_timeout_s",
        env.rank, env.world_size, where, timeout.count() / 1000, e.what_without_backtrace());
  }
  try {
    check_same_config(*dp->store_, env, config_hash);
  } catch (const c10::Error& e) {
    user_error("rank {} of {}: the rendezvous at {} failed while comparing configs ({})", env.rank,
               env.world_size, where, e.what_without_backtrace());
  }
  if (backend == "gloo") {
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    dp->group_ =
        c10::make_intrusive<c10d::ProcessGroupGloo>(dp->store_, env.rank, env.world_size, options);
  } else if (backend == "nccl") {
#if defined(QLT_HAVE_NCCL)
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    dp->device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    dp->group_ =
        c10::make_intrusive<c10d::ProcessGroupNCCL>(dp->store_, env.rank, env.world_size, options);
#else
    user_error(
        "training.distributed nccl needs a CUDA build of qlora-train (-DQLT_CUDA=ON) compiled "
        "with NCCL's header (nccl.h); this one has none: use training.distributed gloo");
#endif
  } else {
    TORCH_CHECK(false, "DataParallel::join: unknown backend ", backend);
  }
  spdlog::info("rank {} of {} joined the process group ({}, rendezvous at {})", env.rank,
               env.world_size, backend, where);
  return dp;
}

DataParallel::~DataParallel() = default;

template <typename F>
void DataParallel::collective(const char* what, F&& run) {
  try {
    run();
  } catch (const std::exception& e) {
    // Gloo reports a dead peer as a closed connection at once, NCCL within the timeout.
    throw RuntimeError(fmt::format(
        "rank {} of {}: the {} over the process group failed: another rank stopped (killed, "
        "crashed or interrupted) or the network failed ({}). Nothing more was written; "
        "restart every rank with --resume to continue from the last complete checkpoint",
        env_.rank, env_.world_size, what, first_line(e.what())));
  }
}

c10::intrusive_ptr<c10d::Work> DataParallel::start_all_reduce(at::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  c10::intrusive_ptr<c10d::Work> work;
  collective("all-reduce of the gradients", [&] { work = group_->allreduce(one, options); });
  return work;
}

void DataParallel::wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  collective(what, [&] { work->wait(); });
}

void DataParallel::all_reduce_flat(at::Tensor& flat) {
  std::vector<at::Tensor> one{flat};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::SUM;
  collective("all-reduce of the gradients", [&] { group_->allreduce(one, options)->wait(); });
}

void DataParallel::all_reduce_sum(const std::vector<at::Tensor>& tensors) {
  size_t first = 0;
  while (first < tensors.size()) {
    // [first, last): consecutive tensors of one dtype, <= kBucketBytes (at least one tensor).
    size_t last = first + 1;
    int64_t bytes = tensors[first].nbytes();
    while (last < tensors.size() && tensors[last].scalar_type() == tensors[first].scalar_type() &&
           bytes + static_cast<int64_t>(tensors[last].nbytes()) <= kBucketBytes) {
      bytes += static_cast<int64_t>(tensors[last].nbytes());
      ++last;
    }
    std::vector<at::Tensor> flat_parts;
    for (size_t i = first; i < last; ++i)
      flat_parts.push_back(tensors[i].reshape({-1}).to(device_));
    at::Tensor flat = at::cat(flat_parts);  // [sum of numels], one buffer per bucket
    all_reduce_flat(flat);
    int64_t offset = 0;
    for (size_t i = first; i < last; ++i) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(flat.narrow(0, offset, n).view(tensors[i].sizes()));
      offset += n;
    }
    first = last;
  }
}

std::vector<double> DataParallel::all_gather(double value) {
  std::vector<at::Tensor> input{
      at::full({1}, value, at::TensorOptions().dtype(at::kDouble).device(device_))};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < env_.world_size; ++r) output[0].push_back(at::empty_like(input[0]));
  collective("all-gather", [&] { group_->allgather(output, input)->wait(); });
  std::vector<double> values;
  for (const auto& t : output[0]) values.push_back(t.item<double>());
  return values;
}

void DataParallel::barrier() {
  collective("barrier", [&] { group_->barrier()->wait(); });
}

}  // namespace qlt::dist
