// A scratch copy of tests/fixtures/bnb_llama_gqa (a transformers-saved bitsandbytes 4-bit
// model) whose tensors and quant-state JSON a test spoils before reading the copy back.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "io/safetensors_test_util.h"
#include "test_common.h"
#include "test_paths.h"

namespace qlt::test {

inline const std::filesystem::path kBnbFixtureDir = kFixtures / "bnb_llama_gqa";
inline const std::string kBnbStateSuffix = ".quant_state.bitsandbytes__nf4";

inline std::string tensor_text(const at::Tensor& bytes) {
  const at::Tensor c = bytes.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()));
}

inline at::Tensor text_tensor(const std::string& text) {
  at::Tensor t = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  if (!text.empty()) std::memcpy(t.data_ptr(), text.data(), text.size());
  return t;
}

struct BnbFixtureCopy {
  TempDir dir;
  std::vector<std::pair<std::string, at::Tensor>> tensors;  // file order
  std::string weight;  // the weight whose quant state state() / edit_state() act on

  explicit BnbFixtureCopy(std::string weight_name) : weight(std::move(weight_name)) {
    const auto file = io::SafetensorsFile::open(kBnbFixtureDir / "model.safetensors");
    for (const auto& info : file.tensors())
      tensors.emplace_back(info.name, file.tensor(info.name).clone());
    std::filesystem::copy_file(kBnbFixtureDir / "config.json", dir / "config.json");
  }
  at::Tensor& at(const std::string& name) {
    for (auto& [n, t] : tensors)
      if (n == name) return t;
    FAIL("no tensor " << name);
    throw;
  }
  void set(const std::string& name, at::Tensor t) {
    for (auto& [n, old] : tensors)
      if (n == name) {
        old = std::move(t);
        return;
      }
    tensors.emplace_back(name, std::move(t));
  }
  void erase(const std::string& name) {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const auto& p) { return p.first == name; });
    REQUIRE(it != tensors.end());
    tensors.erase(it);
  }
  void rename(const std::string& from, const std::string& to) {
    at::Tensor t = at(from);
    erase(from);
    set(to, t);
  }
  nlohmann::json state() {
    return nlohmann::json::parse(tensor_text(at(weight + kBnbStateSuffix)));
  }
  void set_state_text(const std::string& text) { set(weight + kBnbStateSuffix, text_tensor(text)); }
  template <typename Edit>
  void edit_state(Edit edit) {
    nlohmann::json j = state();
    edit(j);
    set_state_text(j.dump());
  }
  // Writes model.safetensors (config.json is already there).
  void save() { io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}}); }
};

}  // namespace qlt::test
