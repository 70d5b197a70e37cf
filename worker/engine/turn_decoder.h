// The per-token half of generation, shared by Engine::Generate (one sequence) and the batching
// scheduler (many): sample at an absolute position, end at a stop token, a stop string or
// max_tokens, and stream the generated text as UTF-8 that never splits a character.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "worker/engine/engine.h"

namespace rsd {

// Text produced piecewise from a growing byte string (the decode of the tokens so far): Take()
// returns the new complete characters only, holding back a tail that may still become a
// character; bytes that can never be UTF-8 become U+FFFD. Finish() flushes the held-back tail
// (as U+FFFD). The concatenation of everything returned is valid UTF-8.
class Utf8Stream {
 public:
  // `bytes` must extend the previous call's `bytes`.
  std::string Take(const std::string& bytes);
  std::string Finish(const std::string& bytes);
  int64_t emitted() const { return emitted_; }  // bytes of valid UTF-8 returned so far

 private:
  std::string Convert(const std::string& bytes, bool final);
  size_t consumed_ = 0;   // input bytes already converted
  int64_t emitted_ = 0;
};

class TurnDecoder {
 public:
  TurnDecoder(const Tokenizer& tokenizer, std::vector<int32_t> stop_ids,
              const GenerateParams& params);

  // Samples the next token from `logits` for absolute session position `position`. Returns true
  // if the turn ends with it (stop token, stop string, or max_tokens reached).
  bool Next(std::span<const float> logits, int64_t position);
  // The turn ends before any token (max_tokens 0).
  bool done() const { return done_; }

  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::string& finish_reason() const { return finish_reason_; }
  // The decode of every generated token (stop tokens render as nothing); may end mid-character.
  // A matched stop string and whatever follows it are included (the token log keeps them).
  const std::string& text() const { return text_; }
  // The answer: text() up to the first matched stop string (OpenAI and llama.cpp leave the stop
  // string out of the returned text).
  std::string answer() const { return text_.substr(0, std::min(stop_at_, text_.size())); }
  // New complete characters of the answer since the last call (all of the rest once done). While
  // the turn runs, a tail of the text that may still grow into a stop string is held back, so no
  // byte of a stop string is ever returned.
  std::string TakeText();
  const std::vector<uint64_t>& logit_hashes() const { return logit_hashes_; }

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> stop_ids_;
  GenerateParams params_;
  std::vector<int32_t> tokens_;
  std::vector<int32_t> text_tokens_;  // generated tokens that are not stop tokens
  std::string text_;
  size_t stop_at_ = std::string::npos;  // byte offset of the first stop-string match in text_
  std::string finish_reason_ = "length";
  bool done_ = false;
  Utf8Stream stream_;
  std::vector<uint64_t> logit_hashes_;
};

}  // namespace rsd
