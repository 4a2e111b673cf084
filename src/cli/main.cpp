// qlora-train: entry point. Parses the command line, dispatches to one subcommand, and maps
// errors to exit codes (DESIGN.md §1): 0 ok, 1 runtime failure, 2 bad input.
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/command.h"
#include "core/did_you_mean.h"
#include "core/errors.h"
#include "core/logging.h"

namespace {

namespace fs = std::filesystem;

// The command line named no known command (CLI11 then only says "A subcommand is required"):
// name the word that was taken for one, suggest the nearest command, list them all.
int no_command(const CLI::App& app, const std::vector<qlt::cli::Command>& commands) {
  std::vector<std::string> names;
  for (const auto& command : commands) names.push_back(command.app->get_name());
  // Arguments CLI11 could not place, in order; the first that is not an option is the word
  // given where the command belongs.
  const std::vector<std::string> rest = app.remaining();
  std::string word;
  for (const auto& arg : rest) {
    if (!arg.empty() && arg[0] != '-') {
      word = arg;
      break;
    }
  }
  const std::string list = fmt::format("{}", fmt::join(names, ", "));
  if (word.empty()) {
    fmt::print(stderr,
               "error: no command given{}; run `qlora-train COMMAND --config FILE ...` with a "
               "COMMAND of: {} (`qlora-train --help` describes them)\n",
               rest.empty() ? "" : fmt::format(" (unrecognised: {})", fmt::join(rest, " ")), list);
  } else {
    const auto match = qlt::closest_match(word, names);
    fmt::print(stderr, "error: unknown command '{}'; {}Commands: {} (`qlora-train --help`)\n",
               qlt::abridged(word), match ? fmt::format("did you mean '{}'? ", *match) : "", list);
  }
  return qlt::kExitBadInput;
}

// A std::filesystem error that escaped the code that knows which setting the path came from:
// still say which path and what to do, and tell a path the user can fix (exit 2) from a
// failure of the machine such as a full disk (exit 1).
int filesystem_failure(const fs::filesystem_error& e) {
  // e.what() is "filesystem error: <operation>: <reason> [path1] [path2]".
  std::string operation = e.what();
  if (const auto at = operation.find(" ["); at != std::string::npos) operation.resize(at);
  if (const auto prefix = std::string("filesystem error: "); operation.starts_with(prefix))
    operation.erase(0, prefix.size());
  std::string paths;
  for (const fs::path* p : {&e.path1(), &e.path2()}) {
    if (!p->empty())
      paths += fmt::format("{}{}", paths.empty() ? "" : " and ", qlt::abridged(p->native()));
  }
  const int err = e.code().value();
  if (e.code().category() == std::generic_category() ||
      e.code().category() == std::system_category()) {
    if (err == ENAMETOOLONG) {
      const fs::path& longest =
          e.path1().native().size() >= e.path2().native().size() ? e.path1() : e.path2();
      fmt::print(stderr,
                 "error: {}: {}; shorten it (the paths of the config, --config, --checkpoint, "
                 "--out)\n",
                 operation, qlt::path_too_long("a path", longest.native()));
      return qlt::kExitBadInput;
    }
    if (!qlt::is_user_path_errno(err)) {
      fmt::print(stderr, "error: {}: {}; check the device it is on (free space, health)\n",
                 operation, paths);
      return qlt::kExitRuntime;
    }
  }
  fmt::print(stderr,
             "error: {}: {}; check the paths of the config and the command line (a folder on "
             "the way must exist, and be writable for outputs)\n",
             operation, paths);
  return qlt::kExitBadInput;
}

}  // namespace

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
      qlt::cli::add_config_command(app),   qlt::cli::add_eval_command(app),
      qlt::cli::add_generate_command(app), qlt::cli::add_inspect_command(app),
      qlt::cli::add_quantize_command(app), qlt::cli::add_train_command(app),
      qlt::cli::add_export_command(app),
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // With no command recognised CLI11 stops at "A subcommand is required" (before it would
    // complain about the arguments it could not place).
    if (dynamic_cast<const CLI::RequiredError*>(&e) && app.get_subcommands().empty())
      return no_command(app, commands);
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
  } catch (const qlt::RuntimeError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return qlt::kExitRuntime;
  } catch (const fs::filesystem_error& e) {
    return filesystem_failure(e);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what_without_backtrace());
    return qlt::kExitRuntime;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return qlt::kExitRuntime;
  }
}
