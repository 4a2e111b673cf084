// `qlora-train generate`: text from a prompt (or, with --chat, the reply to one user message in
// the chat template), streamed to stdout as it is generated; greedy or sampled as the config's
// generate section says; with the LoRA adapter of --checkpoint.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "cli/model_setup.h"
#include "cli/text_stream.h"
#include "core/config.h"
#include "core/device.h"
#include "core/errors.h"
#include "data/segments.h"
#include "data/templates.h"
#include "model/generate.h"

namespace qlt::cli {
namespace {

struct GenerateArgs {
  ConfigArgs config;
  std::string checkpoint;             // PEFT adapter folder, or a training checkpoint folder
  std::optional<std::string> prompt;  // the text to continue; with --chat the user's message
  bool chat = false;
  bool json = false;
};

// The prompt's tokens, and with --chat the template's end-of-turn token (nullopt without one).
struct Prompt {
  std::vector<int64_t> ids;
  std::optional<int64_t> end_of_turn;
};

Prompt make_prompt(const GenerateArgs& args, const TrainConfig& cfg,
                   const tokenizer::Tokenizer& tokenizer) {
  Prompt p;
  if (!args.chat) {
    p.ids = tokenizer.encode(*args.prompt, tokenizer.add_bos_by_default());
  } else {
    const auto chat_template =
        data::resolve_chat_template(cfg.data.chat_template, tokenizer, cfg.model.path);
    p.ids = data::tokenize_segments(
                tokenizer, data::chat_prompt_segments(chat_template, {{"user", *args.prompt}}))
                .ids;
    // A turn ends with a special token (<|im_end|>, <|eot_id|>) in vocabularies that have it;
    // with another tokenizer the marker is plain text and only EOS stops generation.
    const std::string end = data::end_of_turn_text(chat_template);
    if (!end.empty()) p.end_of_turn = tokenizer.piece_to_id(end);
  }
  if (p.ids.empty()) {
    user_error(
        "--prompt is empty and the model adds no BOS token, so there is nothing to continue; "
        "give some text");
  }
  return p;
}

int run_generate(const GenerateArgs& args) {
  if (!args.prompt) {
    user_error(
        "generate needs --prompt TEXT: the text to continue (with --chat: the user's message), "
        "e.g. qlora-train generate --config C --prompt \"Once upon a time\"");
  }
  TrainConfig cfg = load_config(args.config.config_path, args.config.overrides);
  const train::RunOptions run = train::run_options(cfg);
  const at::Device device = run.device;
  // (Not a structured binding: clang 14 refuses those in lambda captures.)
  InferenceModel loaded = load_inference_model(cfg, run, args.checkpoint);
  const tokenizer::Tokenizer& tokenizer = loaded.tokenizer;
  const model::LlamaModel& model = loaded.model;
  const Prompt prompt = make_prompt(args, cfg, tokenizer);

  model::GenerateOptions options;
  options.max_new_tokens = cfg.generate.max_new_tokens;
  options.sampling = {cfg.generate.temperature, cfg.generate.top_p};
  options.seed = static_cast<uint64_t>(cfg.generate.seed);
  for (int64_t id : {tokenizer.eos_id(), model.config.eos_token_id}) {
    if (id >= 0 && id < model.config.vocab_size) options.stop_ids.push_back(id);
  }
  if (prompt.end_of_turn) options.stop_ids.push_back(*prompt.end_of_turn);
  const auto n = static_cast<int64_t>(prompt.ids.size());
  if (n + options.max_new_tokens > model.config.max_position_embeddings) {
    spdlog::warn(
        "{} prompt tokens + generate.max_new_tokens {} exceed the model's "
        "max_position_embeddings {}: output past it may degrade",
        n, options.max_new_tokens, model.config.max_position_embeddings);
  }

  // The last prompt tokens give the first new token its context (a leading space).
  TextStream stream([&](const std::vector<int64_t>& ids) { return tokenizer.decode(ids); },
                    {prompt.ids.end() - std::min<int64_t>(n, 4), prompt.ids.end()});
  std::string text;
  const auto result = model::generate(model, prompt.ids, options, [&](int64_t id) {
    const std::string piece = stream.push(id);
    text += piece;
    if (!args.json && !piece.empty()) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  });
  const std::string rest = stream.finish();
  text += rest;
  // A token that is both (SmolLM2's <|im_end|> is its EOS) is reported as EOS.
  const char* stop = !result.stop_id                         ? "max_new_tokens"
                     : *result.stop_id == tokenizer.eos_id() ? "eos"
                     : prompt.end_of_turn && *result.stop_id == *prompt.end_of_turn ? "end_of_turn"
                                                                                    : "eos";
  const double seconds = result.prompt_seconds + result.decode_seconds;
  const auto new_tokens = static_cast<int64_t>(result.ids.size());
  // Tokens per second of the steps after the first (the first includes the prompt's forward).
  const double rate =
      new_tokens > 1 ? (new_tokens - 1) / std::max(result.decode_seconds, 1e-9) : 0.0;
  if (args.json) {
    nlohmann::json out = {{"prompt_ids", prompt.ids},
                          {"ids", result.ids},
                          {"text", text},
                          {"stop", stop},
                          {"prompt_tokens", n},
                          {"new_tokens", new_tokens},
                          {"prompt_seconds", result.prompt_seconds},
                          {"seconds", seconds},
                          {"tokens_per_second", rate}};
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print("{}\n", rest);
    std::fflush(stdout);
  }
  spdlog::info(
      "generate: {} prompt tokens ({:.2f} s to the first new token), {} new tokens, {:.1f} "
      "tokens/s, stopped at {} ({} on {})",
      n, result.prompt_seconds, new_tokens, rate, stop,
      cfg.generate.temperature == 0.0
          ? std::string("greedy")
          : fmt::format("temperature {}, top_p {}, seed {}", cfg.generate.temperature,
                        cfg.generate.top_p, cfg.generate.seed),
      device.str());
  return kExitOk;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  auto* sub = app.add_subcommand(
      "generate", "Generate text from --prompt (settings: the config's generate section)");
  add_config_args(*sub, args->config);
  sub->add_option("--prompt", args->prompt,
                  "The text to continue; with --chat, the user's message");
  sub->add_flag("--chat", args->chat,
                "Render --prompt as one user turn of the chat template (data.chat_template; auto "
                "= the model's own) followed by the assistant's turn to generate");
  sub->add_option("--checkpoint", args->checkpoint,
                  "Apply a LoRA adapter: a PEFT adapter folder (e.g. <run>/final) or a training "
                  "checkpoint folder");
  sub->add_flag("--json", args->json,
                "Print one JSON object at the end (prompt and new token ids, text, stop reason, "
                "timing) instead of streaming the text");
  return {sub, [args] { return run_generate(*args); }};
}

}  // namespace qlt::cli
