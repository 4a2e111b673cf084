// Fuzz target: a checkpoint's manifest.json -> qlt::train::checkpoint_problem, in a scratch
// checkpoint folder that also holds DONE and two small files (trainer_state.json and
// adapter/adapter_config.json, whose sizes and SHA-1 the seed manifests in
// corpus/checkpoint_manifest/ list, so that the fuzzer starts from a folder that verifies).
//
// checkpoint_problem answers a string ("" = intact) and never throws for bad content: here
// every exception, UserError included, is a finding. An intact verdict must come with a
// manifest that is valid JSON.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fuzz_util.h"
#include "train/run_checkpoint.h"

namespace {

// The folder's fixed content (besides manifest.json and DONE). Keep in step with the seeds.
constexpr const char* kStateText = "{\"step\": 1}\n";  // 12 bytes
constexpr const char* kAdapterText = "{}\n";           // 3 bytes

const std::filesystem::path& checkpoint_dir() {
  static const qlt::fuzz::ScratchDir scratch("checkpoint_manifest");
  static const std::filesystem::path dir = [] {
    const auto d = scratch / "checkpoint-000001";
    std::filesystem::create_directories(d / "adapter");
    qlt::fuzz::write_file(d / qlt::train::kDoneFile, "");
    qlt::fuzz::write_file(d / "trainer_state.json", kStateText);
    qlt::fuzz::write_file(d / "adapter/adapter_config.json", kAdapterText);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  const auto& dir = checkpoint_dir();
  const std::string_view text = qlt::fuzz::as_text(data, size);
  qlt::fuzz::write_file(dir / qlt::train::kManifestFile, text);
  std::string problem;  // nothing may escape: no UserError either
  if (!qlt::fuzz::runs_or_tolerated([&] { problem = qlt::train::checkpoint_problem(dir); }))
    return 0;
  if (problem.empty()) {
    QLT_FUZZ_REQUIRE(nlohmann::json::accept(text), "a manifest that is not JSON verified");
  }
  return 0;
}
