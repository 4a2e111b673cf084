// Fuzz target: a bitsandbytes NF4 quant state (the JSON that transformers stores as the U8
// tensor `<weight>.quant_state.bitsandbytes__nf4`) -> qlt::quant::read_bnb_nf4, the reader
// of the bnb 4-bit layout (src/quant/bnb_layout.h), used as the tests and the model loader
// use it: SafetensorsCheckpoint::open of a folder, claims_bnb_4bit_layout, read_bnb_nf4.
//
// The scratch folder's model.safetensors holds the six entries of ONE weight of
// tests/fixtures/bnb_llama_gqa (model.layers.0.mlp.down_proj.weight: packed codes, absmax,
// quant_map, nested_absmax, nested_quant_map, quant state), written with
// qlt::io::save_safetensors once per input with the fuzz bytes as the quant-state tensor
// (about 6 KB, in RAM). The seeds are the fixture's quant states.
//
// Beyond "no crash, no exception other than UserError": an accepted weight has a shape whose
// product matches the packed codes and dequantizes to that shape with finite values.
#include <ATen/ATen.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "quant/bnb_layout.h"
#include "quant/nf4.h"

namespace {

const std::string kWeight = "model.layers.0.mlp.down_proj.weight";  // [64, 160], 160 blocks
const std::string kState = kWeight + "." + qlt::quant::kBnbNf4QuantStateKey;

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("bnb_quant_state");
  return dir;
}

// The weight's entries from the fixture, in file order; the quant state is replaced per input.
std::vector<std::pair<std::string, at::Tensor>>& entries() {
  static std::vector<std::pair<std::string, at::Tensor>> tensors = [] {
    const auto file = qlt::io::SafetensorsFile::open(
        qlt::fuzz::kSourceDir / "tests/fixtures/bnb_llama_gqa/model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& name : qlt::quant::bnb_4bit_companion_names(kWeight)) {
      if (file.contains(name)) out.emplace_back(name, file.tensor(name).clone());
    }
    out.emplace_back(kWeight, file.tensor(kWeight).clone());
    return out;
  }();
  return tensors;
}

at::Tensor bytes_tensor(const uint8_t* data, size_t size) {
  at::Tensor t = at::empty({static_cast<int64_t>(size)}, at::kByte);
  if (size > 0) std::memcpy(t.data_ptr(), data, size);
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  auto& tensors = entries();
  bool replaced = false;
  for (auto& [name, t] : tensors) {
    if (name == kState) {
      t = bytes_tensor(data, size);
      replaced = true;
    }
  }
  QLT_FUZZ_REQUIRE(replaced, "the fixture has no %s", kState.c_str());
  qlt::io::save_safetensors(scratch() / "model.safetensors", tensors, {{"format", "pt"}});

  const auto checkpoint = qlt::io::SafetensorsCheckpoint::open(scratch().path());
  QLT_FUZZ_REQUIRE(qlt::quant::claims_bnb_4bit_layout(checkpoint, kWeight) &&
                       qlt::quant::is_bnb_nf4_module(checkpoint, kWeight),
                   "the weight does not claim the bnb layout");
  qlt::fuzz::accepts([&] {
    const qlt::quant::Nf4Tensor q = qlt::quant::read_bnb_nf4(checkpoint, kWeight);
    QLT_FUZZ_REQUIRE(!q.shape.empty() && q.numel() > 0 && q.packed.numel() == (q.numel() + 1) / 2,
                     "accepted %lld elements for %lld packed bytes",
                     static_cast<long long>(q.numel()), static_cast<long long>(q.packed.numel()));
    const at::Tensor w = qlt::quant::dequantize_nf4(q, at::kFloat);
    QLT_FUZZ_REQUIRE(w.sizes().vec() == q.shape, "dequantized to another shape");
    QLT_FUZZ_REQUIRE(at::isfinite(w).all().item<bool>(), "dequantized to non-finite values");
  });
  return 0;
}
