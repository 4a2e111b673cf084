#include "cli/command.h"

namespace qlt::cli {

CLI::Option* add_config_args(CLI::App& sub, ConfigArgs& args, bool config_required) {
  CLI::Option* config = sub.add_option("-c,--config", args.config_path, "JSON config file");
  config->required(config_required);
  sub.add_option("--set", args.overrides,
                 "Override a config key: --set dotted.key=value (repeatable; value is JSON, "
                 "or a plain string)")
      ->allow_extra_args(false);
  return config;
}

std::optional<quant::Nf4Options> nf4_options(const TrainConfig& config) {
  if (config.quantization.type != "nf4") return std::nullopt;
  quant::check_nf4_block_size(config.quantization.block_size, "quantization.block_size");
  return quant::Nf4Options{config.quantization.block_size, config.quantization.double_quant};
}

}  // namespace qlt::cli
