#include "data/templates.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

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

std::vector<Segment> llama2_chat_segments(const std::vector<ChatMessage>& messages,
                                          bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "llama2_chat_segments: bad chat shape");
  size_t i = 0;
  std::string system;
  bool has_system = messages[0].role == "system";
  if (has_system) system = messages[i++].content;
  std::vector<Segment> out;
  for (bool first_turn = true; i + 1 < messages.size(); i += 2, first_turn = false) {
    std::string user = messages[i].content;
    if (first_turn && has_system) user = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + user;
    out.push_back(bos_segment());
    out.push_back(text_segment("[INST] " + python_strip(user) + " [/INST]", train_on_inputs));
    out.push_back(text_segment(" " + python_strip(messages[i + 1].content) + " ", true));
    out.push_back(eos_segment(true));
  }
  return out;
}

std::vector<Segment> chatml_segments(const std::vector<ChatMessage>& messages,
                                     bool train_on_inputs) {
  TORCH_CHECK(chat_shape_problem(messages).empty(), "chatml_segments: bad chat shape");
  std::vector<Segment> out = {bos_segment()};
  for (const auto& m : messages) {
    const bool assistant = m.role == "assistant";
    out.push_back(text_segment("<|im_start|>" + m.role + "\n", train_on_inputs));
    out.push_back(text_segment(m.content + "<|im_end|>", assistant || train_on_inputs));
    out.push_back(text_segment("\n", train_on_inputs));
  }
  return out;
}

}  // namespace qlt::data
