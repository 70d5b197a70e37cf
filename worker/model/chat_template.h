// Chat templates: the formats our supported models use, recognised from the model's Jinja source,
// rendered without a Jinja engine. Messages' content is never parsed for special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/tokenizer.h"

namespace rsd {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  // Recognises the template from its Jinja source (ChatML, Llama 2 [INST], Llama 3, Mistral,
  // ...); an empty source gives the plain template. UNIMPLEMENTED for an unrecognised source.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Create(const std::string& jinja,
                                                              const Tokenizer* tokenizer);
  virtual ~ChatTemplate() = default;

  // "chatml", "llama2", "llama3", "mistral", or for a model without a template
  // "plain (...)" spelling out the format used.
  virtual std::string name() const = 0;
  // The model's default system prompt ("" if none), included in turn 1 when the user gave none.
  virtual std::string default_system_prompt() const = 0;

  // Tokens appended for one user turn, ending with the assistant header the model continues
  // from. `first_turn` adds BOS (if the model wants one) and the default system prompt.
  std::vector<int32_t> UserTurn(const std::string& user_text, bool first_turn) const {
    return Turn({}, user_text, first_turn);
  }
  // UserTurn preceded by `context` (an OpenAI-style history sent with a request): an optional
  // "system" message first, which replaces the default system prompt (first turn only), then
  // "user" and "assistant" messages alternating, each rendered as a live turn would have left it
  // in the log (the assistant's text, then EndOfAssistantTurn(false)). `context` must pass
  // CheckContext.
  virtual std::vector<int32_t> Turn(const std::vector<ChatMessage>& context,
                                    const std::string& user_text, bool first_turn) const = 0;
  // INVALID_ARGUMENT naming the message for a context Turn cannot render: a system message that
  // is not first or not in the first turn, an unknown role, or user/assistant not alternating
  // from "user" to a last "assistant".
  static absl::Status CheckContext(const std::vector<ChatMessage>& context, bool first_turn);
  // Tokens that close the assistant's turn after generation (e.g. "<|im_end|>\n"), given whether
  // the generation already ended with the end-of-turn token.
  virtual std::vector<int32_t> EndOfAssistantTurn(bool generated_eot) const = 0;
  // Token ids that end an assistant turn when generated (EOS, EOT).
  virtual std::vector<int32_t> StopTokens() const = 0;
};

}  // namespace rsd
