// `qlora-train quantize`: writes the config's base model in bitsandbytes' 4-bit NF4 layout
// (a Hugging Face directory that transformers + bitsandbytes, and qlora-train, load as is).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>

#include "cli/command.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "export/hf_bnb_nf4.h"
#include "io/gguf.h"
#include "quant/weight_format.h"
#include "tokenizer/tokenizer.h"

namespace qlt::cli {
namespace {

struct QuantizeArgs {
  ConfigArgs config;
  std::string out;
  bool overwrite = false;
};

int run_quantize(const QuantizeArgs& args) {
  TrainConfig cfg = load_config(args.config.config_path, args.config.overrides);
  const quant::WeightFormat format = quant::weight_format(cfg.quantization);
  const auto* nf4 = std::get_if<quant::Nf4Options>(&format);
  if (!nf4) {
    user_error(
        "{}: quantization.type is \"{}\"; `quantize` writes NF4, so set it to \"nf4\" (in the "
        "config or with --set quantization.type=nf4)",
        args.config.config_path, cfg.quantization.type);
  }
  set_cpu_threads(cfg.training.threads);
  parse_compute_dtype(cfg.model.compute_dtype);  // validates it before any work
  tokenizer::check_model_path(cfg.model.path);
  if (io::is_gguf_file(cfg.model.path)) {
    user_error(
        "{}: model.path {} is a GGUF file; `quantize` writes a bitsandbytes NF4 copy of a "
        "Hugging Face safetensors directory. Fine-tune a GGUF model as it is (its Q4_1 linears "
        "are used as stored with quantization.type=int4), or point model.path at the Hugging "
        "Face directory of the model",
        args.config.config_path, cfg.model.path);
  }
  exporter::BnbNf4ExportOptions options{*nf4, cfg.model.compute_dtype,
                                        resolve_device(cfg.training.device), args.overwrite};
  const auto start = std::chrono::steady_clock::now();
  const auto s = exporter::write_bnb_nf4_model(cfg.model.path, args.out, options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(
      "wrote {}: {} linear weights in NF4 (block {}, double quant {}), {:.3f} bits/param; "
      "{:.2f} MB -> {:.2f} MB in {:.1f} s\n",
      args.out, s.quantized_weights, nf4->block_size, nf4->double_quant ? "on" : "off",
      s.bits_per_param(), s.input_bytes / 1e6, (s.quantized_bytes + s.other_bytes) / 1e6, seconds);
  return kExitOk;
}

}  // namespace

Command add_quantize_command(CLI::App& app) {
  auto args = std::make_shared<QuantizeArgs>();
  auto* sub = app.add_subcommand(
      "quantize",
      "Write model.path in bitsandbytes' 4-bit NF4 safetensors layout (loads in transformers + "
      "bitsandbytes, and in qlora-train without re-quantizing)");
  add_config_args(*sub, args->config);
  sub->add_option("-o,--out", args->out, "Output directory (must not exist)")->required();
  sub->add_flag("--overwrite", args->overwrite, "Replace --out if it exists (atomically)");
  return {sub, [args] { return run_quantize(*args); }};
}

}  // namespace qlt::cli
