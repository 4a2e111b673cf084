// The dropout generator's seed for one micro-batch: a function of (training.seed, step,
// micro-batch index in the step) only, not of what ran before in this process. So a data-
// parallel rank that trains micro-batches 1, 3, 5 of a step draws the same dropout masks for
// them as a single process that trains all six, and a resumed run needs no generator state.
#pragma once

#include <cstdint>

namespace qlt::train {

// SplitMix64's finaliser over the three inputs: distinct, well-mixed seeds for neighbouring
// steps and micro-batches.
inline uint64_t micro_batch_seed(int64_t seed, int64_t step, int64_t micro_batch) {
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  return mix(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(step)) ^
             static_cast<uint64_t>(micro_batch));
}

}  // namespace qlt::train
