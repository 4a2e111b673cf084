#include "model/kv_cache.h"

#include <c10/util/Exception.h>

namespace qlt::model {

KvCache make_kv_cache(const LlamaConfig& config, int64_t batch, int64_t capacity,
                      at::ScalarType dtype, at::Device device) {
  TORCH_CHECK(batch >= 1 && capacity >= 1, "make_kv_cache: batch ", batch, " and capacity ",
              capacity, " must be positive");
  KvCache cache;
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    cache.keys.push_back(
        at::zeros({batch, config.num_key_value_heads, capacity, config.head_dim}, options));
    cache.values.push_back(at::zeros_like(cache.keys.back()));
  }
  return cache;
}

std::pair<at::Tensor, at::Tensor> KvCache::append(int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  TORCH_CHECK(layer >= 0 && layer < static_cast<int64_t>(keys.size()), "KvCache::append: layer ",
              layer, " of ", keys.size());
  auto& layer_keys = keys[layer];
  auto& layer_values = values[layer];
  const int64_t t = k.size(2);
  TORCH_CHECK(k.dim() == 4 && k.sizes() == v.sizes() && k.size(0) == layer_keys.size(0) &&
                  k.size(1) == layer_keys.size(1) && k.size(3) == layer_keys.size(3),
              "KvCache::append: k ", k.sizes(), " / v ", v.sizes(), " do not fit the cache ",
              layer_keys.sizes());
  TORCH_CHECK(length + t <= capacity(), "KvCache::append: ", length, " + ", t,
              " positions exceed the capacity ", capacity());
  layer_keys.narrow(2, length, t).copy_(k);
  layer_values.narrow(2, length, t).copy_(v);
  return {layer_keys.narrow(2, 0, length + t), layer_values.narrow(2, 0, length + t)};
}

void KvCache::advance(int64_t t) {
  TORCH_CHECK(t >= 0 && length + t <= capacity(), "KvCache::advance: ", length, " + ", t,
              " beyond the capacity ", capacity());
  length += t;
}

void KvCache::grow(int64_t new_capacity) {
  TORCH_CHECK(new_capacity >= length, "KvCache::grow: capacity ", new_capacity,
              " below the length ", length);
  for (auto* layers : {&keys, &values}) {
    for (auto& t : *layers) {
      auto bigger = at::zeros({t.size(0), t.size(1), new_capacity, t.size(3)}, t.options());
      bigger.narrow(2, 0, length).copy_(t.narrow(2, 0, length));
      t = bigger;
    }
  }
}

}  // namespace qlt::model
