// The Gemma chat format (instruction-tuned checkpoints):
//   <bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n{reply}<end_of_turn>\n
// Turns alternate user/model from a user turn; "assistant" is written "model"; a leading system
// message is folded into the first user turn as "system\n\nuser" (Gemma has no system role).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/tokenizer/tokenizer.h"

namespace gemmapod {

struct ChatMessage {
  std::string role;  // "system", "user", "model" or "assistant"
  std::string content;
};

// The prompt as text (markers spelled out), ending with "<start_of_turn>model\n" when asked.
std::string RenderGemmaChat(const std::vector<ChatMessage>& messages, bool add_generation_prompt);

// The same prompt as ids: markers are their single ids (looked up in the model, as they differ
// between Gemma generations) and the text between them is encoded segment by segment, which is
// what Hugging Face's split on special tokens gives for Gemma (no dummy prefix). Unlike there, a
// marker spelled inside a message's content is encoded as ordinary text, never as the marker: a
// message cannot forge turns. (RenderGemmaChat's text cannot make that distinction.)
std::vector<int32_t> EncodeGemmaChat(const Tokenizer& tokenizer,
                                     const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt);

// Where a reply ends: <eos> and <end_of_turn>.
std::vector<int32_t> GemmaStopTokens(const Tokenizer& tokenizer);

}  // namespace gemmapod
