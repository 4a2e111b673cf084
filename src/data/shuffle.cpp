#include "data/shuffle.h"

#include <c10/util/Exception.h>

#include <numeric>

namespace qlt::data {

namespace {

// SplitMix64 finalizer (Steele, Lea, Flood 2014): spreads nearby inputs over all 64 bits.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t bounded_draw(std::mt19937_64& rng, uint64_t bound) {
  TORCH_CHECK(bound > 0, "bounded_draw: bound must be positive");
  // Accept x in [0, 2^64 - r), r = 2^64 mod bound: a whole number of copies of [0, bound).
  const uint64_t r = (UINT64_MAX % bound + 1) % bound;
  const uint64_t max_accepted = UINT64_MAX - r;
  uint64_t x;
  do x = rng();
  while (x > max_accepted);
  return x % bound;
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  TORCH_CHECK(n >= 0 && epoch >= 0, "epoch_permutation: bad n ", n, " or epoch ", epoch);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 rng(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(bounded_draw(rng, static_cast<uint64_t>(i) + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

}  // namespace qlt::data
