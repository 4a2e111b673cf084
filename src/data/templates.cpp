#include "data/templates.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/errors.h"

namespace qlt::data {

std::vector<Segment> text_segments(const std::string& text) {
  return {bos_segment(), text_segment(text, true), eos_segment(true)};
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  // Verbatim from tatsu-lab/stanford_alpaca train.py, PROMPT_DICT.
  if (!input.empty()) {
    return "Below is an instruction that describes a task, paired with an input that provides "
           "further context. Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n" +
           instruction + "\n\n### Input:\n" + input + "\n\n### Response:";
  }
  return "Below is an instruction that describes a task. Write a response that appropriately "
         "completes the request.\n\n### Instruction:\n" +
         instruction + "\n\n### Response:";
}

std::vector<Segment> alpaca_segments(const std::string& instruction, const std::string& input,
                                     const std::string& output, bool train_on_inputs) {
  return {bos_segment(), text_segment(alpaca_prompt(instruction, input), train_on_inputs),
          text_segment(output, true), eos_segment(true)};
}

std::string chat_shape_problem(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return "\"messages\" is empty";
  size_t first = messages[0].role == "system" ? 1 : 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return fmt::format("messages[{}].role \"{}\" is unknown; use system, user or assistant", i,
                         role);
    }
    if (i < first) continue;
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (role != expected) {
      return fmt::format(
          "messages[{}] has role \"{}\" where \"{}\" is expected; a chat is an optional first "
          "system message, then user and assistant turns alternating",
          i, role, expected);
    }
  }
  if (messages.back().role != "assistant") {
    return "the last message must have role \"assistant\" (the reply to train on)";
  }
  return {};
}

namespace {

// The renderers below take a chat of the shape chat_shape_problem accepts, or (prompt) one
// that ends with a user message instead, then append the generation prompt.

std::vector<Segment> render_llama2(const std::vector<ChatMessage>& messages, bool train_on_inputs) {
  size_t i = 0;
  std::string system;
  bool has_system = messages[0].role == "system";
  if (has_system) system = messages[i++].content;
  std::vector<Segment> out;
  for (bool first_turn = true; i < messages.size(); i += 2, first_turn = false) {
    std::string user = messages[i].content;
    if (first_turn && has_system) user = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user;
    out.push_back(template_bos_segment());
    out.push_back(text_segment("[INST] " + python_strip(user) + " [/INST]", train_on_inputs));
    if (i + 1 == messages.size()) break;  // a prompt: the reply is to be generated
    out.push_back(text_segment(" " + python_strip(messages[i + 1].content) + " ", true));
    out.push_back(eos_segment(true));
  }
  return out;
}

std::vector<Segment> render_chatml(const std::vector<ChatMessage>& messages, bool train_on_inputs,
                                   bool generation_prompt) {
  std::vector<Segment> out = {bos_segment()};
  for (const auto& m : messages) {
    const bool assistant = m.role == "assistant";
    out.push_back(text_segment("<|im_start|>" + m.role + "\n", train_on_inputs));
    out.push_back(text_segment(m.content + "<|im_end|>", assistant || train_on_inputs));
    out.push_back(text_segment("\n", train_on_inputs));
  }
  if (generation_prompt) out.push_back(text_segment("<|im_start|>assistant\n", false));
  return out;
}

std::vector<Segment> render_llama3(const std::vector<ChatMessage>& messages, bool train_on_inputs,
                                   bool generation_prompt) {
  std::vector<Segment> out = {template_bos_segment()};
  for (const auto& m : messages) {
    const bool assistant = m.role == "assistant";
    out.push_back(
        text_segment("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", train_on_inputs));
    out.push_back(
        text_segment(python_strip(m.content) + "<|eot_id|>", assistant || train_on_inputs));
  }
  if (generation_prompt) {
    out.push_back(text_segment("<|start_header_id|>assistant<|end_header_id|>\n\n", false));
  }
  return out;
}

// `messages` with the template's default system message first when it has one and the chat
// has no system message.
std::vector<ChatMessage> with_default_system(const ChatTemplate& chat_template,
                                             const std::vector<ChatMessage>& messages) {
  if (chat_template.default_system.empty() || messages.empty() || messages[0].role == "system") {
    return messages;
  }
  std::vector<ChatMessage> out = {{"system", chat_template.default_system}};
  out.insert(out.end(), messages.begin(), messages.end());
  return out;
}

std::vector<Segment> render(const ChatTemplate& chat_template, const std::vector<ChatMessage>& chat,
                            bool train_on_inputs, bool generation_prompt) {
  const auto messages = with_default_system(chat_template, chat);
  if (chat_template.name == "llama2") return render_llama2(messages, train_on_inputs);
  if (chat_template.name == "llama3")
    return render_llama3(messages, train_on_inputs, generation_prompt);
  TORCH_CHECK(chat_template.name == "chatml", "unknown chat template ", chat_template.name);
  return render_chatml(messages, train_on_inputs, generation_prompt);
}

}  // namespace

std::vector<Segment> llama2_chat_segments(const std::vector<ChatMessage>& messages,
                                          bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "llama2_chat_segments: bad chat shape");
  return render_llama2(messages, train_on_inputs);
}

std::vector<Segment> chatml_segments(const std::vector<ChatMessage>& messages,
                                     bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "chatml_segments: bad chat shape");
  return render_chatml(messages, train_on_inputs, /*generation_prompt=*/false);
}

std::vector<Segment> llama3_chat_segments(const std::vector<ChatMessage>& messages,
                                          bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "llama3_chat_segments: bad chat shape");
  return render_llama3(messages, train_on_inputs, /*generation_prompt=*/false);
}

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"llama2", "llama3", "chatml"};
  return names;
}

std::vector<Segment> chat_segments(const ChatTemplate& chat_template,
                                   const std::vector<ChatMessage>& messages, bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "chat_segments: bad chat shape");
  return render(chat_template, messages, train_on_inputs, /*generation_prompt=*/false);
}

std::vector<Segment> chat_prompt_segments(const ChatTemplate& chat_template,
                                          const std::vector<ChatMessage>& messages) {
  // The shape of a training chat once a reply is appended.
  auto completed = messages;
  completed.push_back({"assistant", ""});
  TORCH_CHECK(chat_shape_problem(completed).empty(),
              "chat_prompt_segments: the chat must end with a user message");
  return render(chat_template, messages, /*train_on_inputs=*/false, /*generation_prompt=*/true);
}

std::string end_of_turn_text(const ChatTemplate& chat_template) {
  if (chat_template.name == "chatml") return "<|im_end|>";
  if (chat_template.name == "llama3") return "<|eot_id|>";
  return "";
}

namespace {

// The template text with spaces and tabs removed, double quotes made single and the escape
// \n written as a newline: markers then match whatever the spacing and quoting style.
std::string normalize_jinja(const std::string& jinja) {
  std::string out;
  for (size_t i = 0; i < jinja.size(); ++i) {
    const char c = jinja[i];
    if (c == ' ' || c == '\t') continue;
    if (c == '\\' && i + 1 < jinja.size() && jinja[i + 1] == 'n') {
      out += '\n';
      ++i;
      continue;
    }
    out += c == '"' ? '\'' : c;
  }
  return out;
}

bool has(const std::string& text, std::string_view marker) {
  return text.find(marker) != std::string::npos;
}

// SmolLM2's default system message: the literal after '<|im_start|>system' and a newline (real
// or escaped) up to '<|im_end|>', with escaped newlines unescaped. nullopt when absent.
std::optional<std::string> chatml_default_system(const std::string& jinja) {
  static const std::string kStart = "<|im_start|>system";
  const size_t at = jinja.find(kStart);
  if (at == std::string::npos) return std::nullopt;
  size_t begin = at + kStart.size();
  if (jinja.compare(begin, 1, "\n") == 0) {
    begin += 1;
  } else if (jinja.compare(begin, 2, "\\n") == 0) {
    begin += 2;
  } else {
    return std::nullopt;
  }
  const size_t end = jinja.find("<|im_end|>", begin);
  if (end == std::string::npos) return std::nullopt;
  std::string text;
  for (size_t i = begin; i < end; ++i) {
    if (jinja[i] == '\\' && i + 1 < end && jinja[i + 1] == 'n') {
      text += '\n';
      ++i;
    } else if (jinja[i] == '\'' || jinja[i] == '"' || jinja[i] == '{' || jinja[i] == '}') {
      return std::nullopt;  // not one plain literal
    } else {
      text += jinja[i];
    }
  }
  return text.empty() ? std::nullopt : std::optional<std::string>(text);
}

}  // namespace

std::optional<ChatTemplate> recognize_chat_template(const std::string& jinja) {
  const std::string t = normalize_jinja(jinja);
  if (t.empty() || has(t, "tools") || has(t, "tool_call")) return std::nullopt;

  const bool chatml_turn =
      has(t, "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'") ||
      has(t, "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>\n'");
  if (chatml_turn && has(t, "'<|im_start|>assistant\n'") && !has(t, "bos_token")) {
    // Either the template never names the system role (plain ChatML), or it only puts one
    // literal system message first when the chat has none (SmolLM2).
    if (!has(t, "system")) return ChatTemplate{"chatml", ""};
    const bool default_system_branch =
        has(t, "messages[0]['role']!='system'") || has(t, "messages[0].role!='system'");
    if (!default_system_branch) return std::nullopt;
    auto system = chatml_default_system(jinja);
    if (!system) return std::nullopt;
    return ChatTemplate{"chatml", *system};
  }

  if (has(t,
          "'<|start_header_id|>'+message['role']+'<|end_header_id|>\n\n'+message['content']|"
          "trim+'<|eot_id|>'") &&
      has(t, "bos_token") && has(t, "'<|start_header_id|>assistant<|end_header_id|>\n\n'") &&
      !has(t, "CuttingKnowledgeDate") && !has(t, "date_string")) {
    return ChatTemplate{"llama3", ""};
  }

  if (has(t, "bos_token+'[INST]'+content.strip()+'[/INST]'") &&
      has(t, "''+content.strip()+''+eos_token") &&
      has(t, "'<<SYS>>\n'+system_message+'\n<</SYS>>\n\n'+message['content']") &&
      !has(t, "DEFAULT_SYSTEM") && !has(t, "USE_DEFAULT_PROMPT")) {
    return ChatTemplate{"llama2", ""};
  }
  return std::nullopt;
}

ChatTemplate resolve_chat_template(const std::string& setting,
                                   const tokenizer::Tokenizer& tokenizer,
                                   const std::string& model) {
  const auto& names = chat_template_names();
  if (std::find(names.begin(), names.end(), setting) != names.end()) return {setting, ""};
  if (setting != "auto") {
    user_error("data.chat_template \"{}\" is unknown; use one of {} or auto", setting,
               fmt::join(names, ", "));
  }
  const std::string& jinja = tokenizer.chat_template();
  if (jinja.empty()) {
    user_error(
        "data.chat_template is \"auto\" but the model {} has no chat template (none in its "
        "tokenizer_config.json, chat_template.jinja or GGUF tokenizer.chat_template); set "
        "data.chat_template to the format the model was trained with: {}",
        model, fmt::join(names, ", "));
  }
  if (auto recognized = recognize_chat_template(jinja)) {
    spdlog::info("data.chat_template auto: the chat template of {} is {}{}", model,
                 recognized->name,
                 recognized->default_system.empty() ? "" : " (with its default system message)");
    return *recognized;
  }
  user_error(
      "data.chat_template is \"auto\" but the chat template of {} is none of those implemented "
      "here (it begins \"{}\"); set data.chat_template to the closest of {} (its output may "
      "then differ from the model's own template)",
      model, abridged(jinja, 60), fmt::join(names, ", "));
}

}  // namespace qlt::data
