#include "optim/paged_state.h"

#include "core/errors.h"

#if defined(QLT_WITH_CUDA)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace qlt::optim {

#if defined(QLT_WITH_CUDA)

namespace {

void check_cuda(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "paged optimizer state: ", what,
              " failed: ", cudaGetErrorString(status));
}

bool is_managed_memory(const at::Tensor& t) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, t.data_ptr()) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeManaged;
}

}  // namespace

bool paging_supported(const at::Device& device) {
  if (!device.is_cuda()) return false;
  int managed = 0;
  const int index = device.has_index() ? device.index() : 0;
  if (cudaDeviceGetAttribute(&managed, cudaDevAttrManagedMemory, index) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error the failed query recorded
    return false;
  }
  return managed != 0;
}

at::Tensor to_managed_memory(const at::Tensor& t) {
  TORCH_CHECK(paging_supported(t.device()), "to_managed_memory: ", t.device(),
              " has no CUDA managed memory");
  const c10::cuda::CUDAGuard guard(t.device());
  const auto bytes = static_cast<size_t>(t.numel()) * t.element_size();
  void* ptr = nullptr;
  // cudaMemAttachHost, as bitsandbytes' get_paged: with concurrent managed access (every
  // Linux GPU since Pascal) the device reaches it all the same.
  check_cuda(cudaMallocManaged(&ptr, std::max<size_t>(bytes, 1), cudaMemAttachHost),
             "cudaMallocManaged");
  auto managed = at::from_blob(
      ptr, t.sizes(), [](void* p) { cudaFree(p); }, t.options().memory_format(std::nullopt));
  managed.copy_(t);
  return managed;
}

int64_t prefetch_to_device(const std::vector<at::Tensor>& tensors) {
  int64_t prefetched = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0 || !t.is_cuda() || !is_managed_memory(t)) continue;
    const c10::cuda::CUDAGuard guard(t.device());
    int concurrent = 0;
    check_cuda(
        cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, t.device().index()),
        "cudaDeviceGetAttribute");
    if (concurrent == 0) continue;
    size_t free_bytes = 0, total_bytes = 0;
    check_cuda(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const auto bytes = static_cast<size_t>(t.numel()) * t.element_size();
    if (bytes > free_bytes) continue;  // stays where it is; migrates on demand
    cudaMemLocation location{};
    location.type = cudaMemLocationTypeDevice;
    location.id = t.device().index();
    check_cuda(cudaMemPrefetchAsync(t.data_ptr(), bytes, location, 0,
                                    c10::cuda::getCurrentCUDAStream(t.device().index()).stream()),
               "cudaMemPrefetchAsync");
    prefetched += static_cast<int64_t>(bytes);
  }
  return prefetched;
}

#else  // a CPU build: no CUDA tensors, no managed memory

bool paging_supported(const at::Device&) { return false; }

at::Tensor to_managed_memory(const at::Tensor& t) {
  TORCH_CHECK(false, "to_managed_memory: this build of qlora-train has no CUDA (", t.device(),
              "); callers check paging_supported first");
}

int64_t prefetch_to_device(const std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "prefetch_to_device: this build of qlora-train has no CUDA");
}

#endif

}  // namespace qlt::optim
