// How subcommands plug into main(): each src/cli/cmd_*.cpp registers its options on a
// CLI11 subcommand and returns the function that runs it after parsing succeeded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace qlt::cli {

struct Command {
  CLI::App* app = nullptr;   // the registered subcommand
  std::function<int()> run;  // runs it; returns the exit code
};

// --config FILE and repeatable --set dotted.key=value, shared by commands that take a config.
// --config is required unless `config_required` is false (`config --keys` needs no file);
// returns the --config option so a command can relate other options to it.
struct ConfigArgs {
  std::string config_path;
  std::vector<std::string> overrides;
};
CLI::Option* add_config_args(CLI::App& sub, ConfigArgs& args, bool config_required = true);

Command add_config_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_export_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_inspect_command(CLI::App& app);
Command add_quantize_command(CLI::App& app);
Command add_train_command(CLI::App& app);

}  // namespace qlt::cli
