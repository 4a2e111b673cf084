// qlora-train: entry point. Parses the command line, dispatches to one subcommand, and maps
// errors to exit codes (DESIGN.md §1): 0 ok, 1 runtime failure, 2 bad input.
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <vector>

#include "cli/command.h"
#include "core/errors.h"
#include "core/logging.h"

int main(int argc, char** argv) {
  CLI::App app{
      "qlora-train: fine-tune LLaMA-family models with quantized frozen weights and "
      "small trainable adapters, on one GPU or a CPU.",
      "qlora-train"};
  app.set_version_flag("--version", fmt::format("qlora-train 0.1.0 (LibTorch {})", TORCH_VERSION));
  app.require_subcommand(1);
  app.fallthrough();  // global options (--log-level) may also follow the subcommand
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();

  std::vector<qlt::cli::Command> commands = {
      qlt::cli::add_config_command(app),  qlt::cli::add_eval_command(app),
      qlt::cli::add_inspect_command(app), qlt::cli::add_quantize_command(app),
      qlt::cli::add_train_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help/version (code 0) or the parse error
    return code == 0 ? qlt::kExitOk : qlt::kExitBadInput;
  }

  try {
    qlt::setup_logging(log_level);
    for (auto& command : commands) {
      if (command.app->parsed()) return command.run();
    }
    return qlt::kExitBadInput;  // unreachable: require_subcommand(1)
  } catch (const qlt::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return qlt::kExitBadInput;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what_without_backtrace());
    return qlt::kExitRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return qlt::kExitRuntime;
  }
}
