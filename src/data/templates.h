// Prompt templates: how one record of each dataset format becomes trained / untrained
// text segments (tokenized by tokenize_segments in segments.h).
#pragma once

#include <string>
#include <vector>

#include "data/segments.h"

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

// Empty when `messages` has the shape both chat templates accept, else what is wrong:
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

}  // namespace qlt::data
