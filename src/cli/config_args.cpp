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

}  // namespace qlt::cli
