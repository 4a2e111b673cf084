// Paged optimizer state (optimizer.type paged_adamw / paged_adamw_8bit; METHODS.md §7), as
// bitsandbytes' paged optimizers keep it: in CUDA managed (unified) memory, so that under memory
// pressure (a long batch's activation spike) the driver evicts state pages to host RAM instead of
// the step failing with out-of-memory, and migrates them back on demand. Before each update the
// state is prefetched to the GPU, as far as the GPU has room for it. As in bitsandbytes, only
// state tensors of at least kMinPagedElements elements are paged (small ones stay ordinary
// device memory) and the memory is allocated with cudaMemAttachHost. The numbers are the same
// as the non-paged optimizer's: only where the bytes live changes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace qlt::optim {

inline constexpr int64_t kMinPagedElements = 100000;  // bnb: A.numel() < 1e5 is not paged

// True when state for parameters on `device` can be paged: a CUDA build (QLT_WITH_CUDA), a CUDA
// device, and a device that supports managed memory (cudaDevAttrManagedMemory).
bool paging_supported(const at::Device& device);

// A copy of `t` (a CUDA tensor) in managed memory: same shape, dtype and values, contiguous. The
// memory is freed (cudaFree) when the last tensor using it goes. Only where
// paging_supported(t.device()); an internal error otherwise.
at::Tensor to_managed_memory(const at::Tensor& t);

// Prefetches each managed-memory tensor of `tensors` (others are skipped) to its device on the
// current CUDA stream, in order, each only while the device's free memory (cudaMemGetInfo) is
// at least its size, so a prefetch never takes memory the step needs; the rest migrate page by
// page when the update touches them. Nothing is prefetched on a device without concurrent
// managed access (bnb skips it there too). Returns the bytes prefetched. Only where paging is
// supported.
int64_t prefetch_to_device(const std::vector<at::Tensor>& tensors);

}  // namespace qlt::optim
