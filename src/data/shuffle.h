// Portable seeded shuffling: the same seed gives the same order with every compiler and
// standard library. (std::shuffle and std::uniform_int_distribution are implementation-
// defined; std::mt19937_64 itself is fully specified by the standard.)
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace qlt::data {

// Uniform integer in [0, bound) by rejection sampling on full 64-bit draws (no modulo
// bias). bound > 0.
uint64_t bounded_draw(std::mt19937_64& rng, uint64_t bound);

// The order of n examples in `epoch` for `seed`: Fisher-Yates (Durstenfeld: i from n-1
// down to 1, swap with j = bounded_draw(i + 1)) over an mt19937_64 seeded with a
// SplitMix64 mix of (seed, epoch), so every epoch has its own independent order.
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace qlt::data
