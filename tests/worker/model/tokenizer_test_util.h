// Small synthetic tokenizer specs shared by the tokenizer tests.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "worker/model/tokenizer_spec.h"

namespace rsd::testing {

// GPT-2's byte-level character for byte `b`, UTF-8 encoded.
inline std::string ByteChar(uint8_t b) {
  uint32_t n = 0, cpt = b;
  const auto printable = [](uint32_t c) {
    return (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
  };
  if (!printable(b)) {
    for (uint32_t c = 0; c < b; ++c) n += !printable(c);
    cpt = 256 + n;
  }
  std::string s;
  if (cpt < 0x80) {
    s.push_back(static_cast<char>(cpt));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cpt >> 6)));
    s.push_back(static_cast<char>(0x80 | (cpt & 0x3F)));
  }
  return s;
}

// The byte-level form of `text` ("Ġ" for a space, ...), as vocabulary pieces are spelled.
inline std::string ByteLevel(std::string_view text) {
  std::string out;
  for (char c : text) out += ByteChar(static_cast<uint8_t>(c));
  return out;
}

// A "gpt2" spec whose ids 0..255 are the 256 byte characters in byte order, then one token per
// merge (in order), then the given special tokens. Merges are given in plain text ("h e").
inline TokenizerSpec ByteLevelSpec(const std::vector<std::pair<std::string, std::string>>& merges,
                                   const std::vector<std::pair<std::string, TokenType>>& specials,
                                   const std::string& pre = "gpt-2") {
  TokenizerSpec s;
  s.model = "gpt2";
  s.pre = pre;
  for (int b = 0; b < 256; ++b) {
    s.tokens.push_back(ByteChar(static_cast<uint8_t>(b)));
    s.types.push_back(TokenType::kNormal);
  }
  for (const auto& [a, b] : merges) {
    s.merges.push_back(ByteLevel(a) + " " + ByteLevel(b));
    s.tokens.push_back(ByteLevel(a + b));
    s.types.push_back(TokenType::kNormal);
  }
  for (const auto& [text, type] : specials) {
    s.tokens.push_back(text);
    s.types.push_back(type);
  }
  return s;
}

inline int32_t IdOf(const TokenizerSpec& s, std::string_view text) {
  for (size_t i = 0; i < s.tokens.size(); ++i) {
    if (s.tokens[i] == text) return static_cast<int32_t>(i);
  }
  return -1;
}

// A "llama" spec: <unk> <s> </s>, the 256 <0xXX> byte tokens, then `pieces` with their scores
// ("\u2581" spelled as "_" in the arguments for readability).
inline TokenizerSpec SpmSpec(const std::vector<std::pair<std::string, float>>& pieces) {
  TokenizerSpec s;
  s.model = "llama";
  s.tokens = {"<unk>", "<s>", "</s>"};
  s.types = {TokenType::kUnknown, TokenType::kControl, TokenType::kControl};
  s.scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char hex[8];
    std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
    s.tokens.push_back(hex);
    s.types.push_back(TokenType::kByte);
    s.scores.push_back(0);
  }
  for (const auto& [p, score] : pieces) {
    std::string t;
    for (char c : p) t += c == '_' ? std::string("\xE2\x96\x81") : std::string(1, c);
    s.tokens.push_back(t);
    s.types.push_back(TokenType::kNormal);
    s.scores.push_back(score);
  }
  s.unk_id = 0;
  s.bos_id = 1;
  s.eos_id = 2;
  s.add_bos = true;
  s.add_space_prefix = true;
  return s;
}

}  // namespace rsd::testing
