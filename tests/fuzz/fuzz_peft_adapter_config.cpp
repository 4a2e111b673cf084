// Fuzz target: a PEFT adapter_config.json -> qlt::exporter::read_peft_adapter, in a scratch
// adapter folder beside a valid adapter_model.safetensors (a copy of
// tests/fixtures/lora_llama_gqa/adapter/, what peft 0.21.2 wrote), so that an accepted config
// goes on to read the weights as the program does.
//
// Beyond "no crash, no exception other than UserError": accepted options are in range
// (r >= 1, finite lora_alpha, 0 <= lora_dropout < 1, at least one target module) and every
// tensor of the file is read.
#include <cmath>
#include <filesystem>

#include "adapters/adapter.h"
#include "export/peft_adapter.h"
#include "fuzz_util.h"

namespace {

const qlt::fuzz::ScratchDir& scratch() {
  static const qlt::fuzz::ScratchDir dir("peft_adapter_config");
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qlt::fuzz::quiet_once();
  static const size_t weights_tensors = [] {
    const auto fixture = qlt::fuzz::kSourceDir / "tests/fixtures/lora_llama_gqa/adapter";
    std::filesystem::copy_file(fixture / qlt::exporter::kPeftWeightsFile,
                               scratch() / qlt::exporter::kPeftWeightsFile,
                               std::filesystem::copy_options::overwrite_existing);
    return qlt::exporter::read_peft_adapter(fixture).tensors.size();
  }();
  qlt::fuzz::write_file(scratch() / qlt::exporter::kPeftConfigFile, qlt::fuzz::as_text(data, size));

  qlt::fuzz::accepts([&] {
    const auto adapter = qlt::exporter::read_peft_adapter(scratch().path());
    const auto& o = adapter.config;
    // What load_peft_adapter does next: the one conversion must accept what the reader did.
    qlt::adapters::adapter_options(o, qlt::quant::DenseFormat{});
    QLT_FUZZ_REQUIRE(o.rank >= 1, "accepted r = %lld", static_cast<long long>(o.rank));
    QLT_FUZZ_REQUIRE(std::isfinite(o.alpha), "accepted a non-finite lora_alpha");
    QLT_FUZZ_REQUIRE(o.dropout >= 0 && o.dropout < 1, "accepted lora_dropout = %g", o.dropout);
    QLT_FUZZ_REQUIRE(!o.target_modules.empty(), "accepted no target module");
    QLT_FUZZ_REQUIRE(adapter.tensors.size() == weights_tensors, "read %zu of %zu tensors",
                     adapter.tensors.size(), weights_tensors);
  });
  return 0;
}
