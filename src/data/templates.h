// Prompt templates: how one record of each dataset format becomes trained / untrained
// text segments (tokenized by tokenize_segments in segments.h), and the chat templates of
// format "chat" and `generate --chat` (llama2, llama3, chatml; "auto" picks the model's own).
//
// BOS: bos_segment() is the tokenizer's convention (what tokenizer(text) adds: LLaMA-2's and
// the tiny model's BOS, nothing for SmolLM2); template_bos_segment() is a `bos_token` written by
// the template itself (Llama-2 chat per turn, Llama-3 at the start), always emitted.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "data/segments.h"
#include "tokenizer/tokenizer.h"

namespace qlt::data {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

// [BOS] text [EOS], everything trained (BOS is never predicted).
std::vector<Segment> text_segments(const std::string& text);

// The Stanford Alpaca prompt (tatsu-lab/stanford_alpaca, train.py, PROMPT_DICT): the
// "prompt_input" variant when `input` is non-empty, else "prompt_no_input". Ends with
// "### Response:" and no newline or space, as there.
std::string alpaca_prompt(const std::string& instruction, const std::string& input);

// [BOS] prompt | output [EOS]; the prompt is trained only with train_on_inputs. As in
// Stanford's train.py the output follows "### Response:" directly and EOS ends it; unlike
// there, the prompt/output boundary is exact because the two are tokenized separately.
std::vector<Segment> alpaca_segments(const std::string& instruction, const std::string& input,
                                     const std::string& output, bool train_on_inputs);

// Empty when `messages` has the shape every chat template accepts, else what is wrong:
// an optional first "system" message, then user and assistant strictly alternating,
// starting with user and ending with assistant (a training example must end in a reply).
// Roles other than system / user / assistant are rejected.
std::string chat_shape_problem(const std::vector<ChatMessage>& messages);

// Llama-2 chat, as Meta's llama/generation.py chat_completion and the chat template of
// meta-llama/Llama-2-7b-chat-hf render it. Per user/assistant pair:
//   [BOS] "[INST] " + strip(user) + " [/INST]" | " " + strip(assistant) + " " [EOS]
// where the first user content is B_SYS + system + E_SYS + user (B_SYS = "<<SYS>>\n",
// E_SYS = "\n<</SYS>>\n\n") before the strip. Trained: the assistant part and its EOS.
// (transformers 4.57's apply_chat_template with that template and a legacy LlamaTokenizer
// gives the same ids as Meta's code on the tiny tokenizer; the tests compare with Meta's.)
// Requires chat_shape_problem(messages) to be empty.
std::vector<Segment> llama2_chat_segments(const std::vector<ChatMessage>& messages,
                                          bool train_on_inputs);

// ChatML: [BOS] then per message "<|im_start|>" + role + "\n" + content + "<|im_end|>\n":
// the ids of tokenizer(text) in Hugging Face, text = apply_chat_template(..., tokenize=False)
// with the usual ChatML template (checked with transformers 4.57 on the tiny tokenizer).
// Trained: assistant content + "<|im_end|>" (the newline after it is not, as in Hugging
// Face's {% generation %} blocks). No EOS: "<|im_end|>" ends a turn. With a tokenizer that
// has no <|im_start|> / <|im_end|> special tokens (LLaMA-2's, the tiny model's) these
// markers are ordinary text, tokenized into several plain pieces.
std::vector<Segment> chatml_segments(const std::vector<ChatMessage>& messages,
                                     bool train_on_inputs);

// Llama-3 Instruct, as the chat template of meta-llama/Meta-Llama-3-8B-Instruct renders it:
//   bos_token, then per message "<|start_header_id|>" + role + "<|end_header_id|>\n\n" +
//   trim(content) + "<|eot_id|>"
// (Jinja's trim is Python's str.strip()). No default system message (Llama 3.1's templates add
// a dated one; "auto" refuses those). Trained: assistant content + "<|eot_id|>". The markers are
// special tokens of Llama-3 vocabularies; checked against transformers' apply_chat_template
// (tests/fixtures/templates/).
std::vector<Segment> llama3_chat_segments(const std::vector<ChatMessage>& messages,
                                          bool train_on_inputs);

// The chat templates implemented here, as data.chat_template names them: llama2, llama3, chatml.
const std::vector<std::string>& chat_template_names();

struct ChatTemplate {
  std::string name;  // one of chat_template_names()
  // A system message the template puts first when the chat has none; empty: none. SmolLM2's
  // ChatML template has one ("You are a helpful AI assistant named SmolLM, trained by Hugging
  // Face"), so "auto" on SmolLM2 renders exactly what its own template renders.
  std::string default_system;
};

// Which of our templates a model's own chat template (Jinja text: tokenizer.chat_template()) is,
// or nullopt when it is none of them, recognized by markers that fix its output (whitespace
// and quote style ignored):
//  - chatml: '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'
//    and the generation prompt '<|im_start|>assistant\n'; a default system message (a literal
//    '<|im_start|>system\n...<|im_end|>\n' under messages[0]['role'] != 'system') is read out;
//  - llama3: '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' +
//    message['content'] | trim + '<|eot_id|>' and bos_token; not Llama 3.1+'s templates (a dated
//    default system message, tools);
//  - llama2: bos_token + '[INST] ' + content.strip() + ' [/INST]', ' ' + content.strip() + ' ' +
//    eos_token and '<<SYS>>'; not the old default-system-prompt variant.
// Anything else (Mistral's [INST] without <<SYS>>, Zephyr, Qwen's tools, ...) is not recognized.
std::optional<ChatTemplate> recognize_chat_template(const std::string& jinja);

// data.chat_template resolved for a model: a template name as is; "auto" the model's own
// template when recognize_chat_template knows it, else a UserError that names `model` (the
// model.path), says whether it has no template or an unknown one, and lists the choices.
ChatTemplate resolve_chat_template(const std::string& setting,
                                   const tokenizer::Tokenizer& tokenizer, const std::string& model);

// The segments of a training chat (chat_shape_problem(messages) empty) in `chat_template`.
std::vector<Segment> chat_segments(const ChatTemplate& chat_template,
                                   const std::vector<ChatMessage>& messages, bool train_on_inputs);

// The prompt of `generate --chat`: `messages` (an optional system message, then user and
// assistant alternating, ending with a user message) followed by the generation prompt, as
// transformers' apply_chat_template(messages, add_generation_prompt=True) renders it (llama2,
// which has no generation prompt, ends with " [/INST]"). Nothing is trained.
std::vector<Segment> chat_prompt_segments(const ChatTemplate& chat_template,
                                          const std::vector<ChatMessage>& messages);

// The text that ends an assistant turn, whose token stops generation: "<|im_end|>" (chatml),
// "<|eot_id|>" (llama3); "" for llama2, whose turns end with EOS.
std::string end_of_turn_text(const ChatTemplate& chat_template);

}  // namespace qlt::data
