// The key/value cache of incremental decoding (generate): per decoder layer the rotated keys and
// the values of every position processed so far, so that producing token t runs the model on
// one position and attends to the t cached ones (LlamaModel::forward_cached in llama.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "model/llama_config.h"

namespace qlt::model {

struct KvCache {
  // Per layer: [B, num_key_value_heads, capacity, head_dim] in the model's compute dtype.
  // Positions [0, length) hold the keys (after RoPE) and values of the tokens seen so far;
  // the rest is unused space, allocated once so that a step copies one position, not all.
  std::vector<at::Tensor> keys;
  std::vector<at::Tensor> values;
  int64_t length = 0;

  int64_t capacity() const { return keys.empty() ? 0 : keys[0].size(2); }
  int64_t batch_size() const { return keys.empty() ? 0 : keys[0].size(0); }

  // Writes k, v [B, kv_heads, t, head_dim] of `layer` at positions [length, length + t) and
  // returns the keys and values of positions [0, length + t) (views into the cache).
  // `length` itself is advanced by advance(t) once every layer has appended.
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  void advance(int64_t t);

  // Reallocates every layer to `capacity` positions (>= length), keeping positions [0, length):
  // lets a caller start small and double as a generation grows.
  void grow(int64_t capacity);
};

// An empty cache (length 0) for `batch` sequences of up to `capacity` positions, zero-filled.
// Memory: 2 * layers * batch * kv_heads * capacity * head_dim elements of `dtype`.
KvCache make_kv_cache(const LlamaConfig& config, int64_t batch, int64_t capacity,
                      at::ScalarType dtype, at::Device device);

}  // namespace qlt::model
