// `qlora-train config`: validate a config and print the effective one (every key, defaults
// filled in), or list every key with its type, default, allowed values and meaning.
#include <fmt/format.h>

#include <memory>

#include "cli/command.h"
#include "core/config.h"
#include "core/errors.h"

namespace qlt::cli {

Command add_config_command(CLI::App& app) {
  auto* sub = app.add_subcommand(
      "config",
      "Validate a config and print the effective config as JSON (defaults filled in); "
      "--keys lists every key");
  // Owned by the run closure: CLI11 writes into them during parse, run() reads them after.
  auto args = std::make_shared<ConfigArgs>();
  auto list_keys = std::make_shared<bool>(false);
  CLI::Option* config = add_config_args(*sub, *args, /*config_required=*/false);
  sub->add_flag("--keys", *list_keys,
                "List every config key: type, default, allowed values, meaning")
      ->excludes(config)
      ->excludes(sub->get_option("--set"));

  return {sub, [args, list_keys]() -> int {
            if (*list_keys) {
              fmt::print("{}", describe_config_keys());
              return kExitOk;
            }
            if (args->config_path.empty()) {
              user_error(
                  "config: pass --config FILE to validate a config, or --keys to list "
                  "every key");
            }
            const TrainConfig config = load_config(args->config_path, args->overrides);
            fmt::print("{}\n", config_to_text(config));
            return kExitOk;
          }};
}

}  // namespace qlt::cli
