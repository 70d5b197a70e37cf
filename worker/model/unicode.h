// Code point classes and the UTF-8 handling the tokenizers need. The classes come from a generated
// table (tools/gen_unicode_tables.py -> unicode_tables.cc); decoding follows llama.cpp's rules so
// that pre-tokenization splits exactly where the reference does, including on invalid input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace rsd {

// One general-category class per code point (Cn -> kCpUndefined; Cc/Cf/Co/Cs -> kCpControl),
// plus kCpWhitespace for the White_Space property, which is what `\s` means in the pre-tokenizer
// regexes. Code points past U+10FFFF have no flags at all (0).
enum CodepointFlag : uint16_t {
  kCpUndefined = 0x0001,
  kCpNumber = 0x0002,       // \p{N}
  kCpLetter = 0x0004,       // \p{L}
  kCpSeparator = 0x0008,    // \p{Z}
  kCpMark = 0x0010,         // \p{M}
  kCpPunctuation = 0x0020,  // \p{P}
  kCpSymbol = 0x0040,       // \p{S}
  kCpControl = 0x0080,      // \p{C}
  kCpWhitespace = 0x0100,   // \s
};

uint16_t CodepointFlags(uint32_t cpt);

// The Unicode version the table was generated from, e.g. "15.1.0".
const char* UnicodeTablesVersion();

// Decodes UTF-8 the way llama.cpp does before pre-tokenizing: a lead byte's high bits give the
// length, continuation bytes must be 10xxxxxx, and anything else (a stray continuation byte, a
// truncated sequence, 0xF8..0xFF) becomes one U+FFFD per offending lead byte, resuming at the next
// byte. Overlong forms and surrogates decode to their value; values past U+10FFFF are invalid.
std::vector<uint32_t> DecodeUtf8Lax(std::string_view text);

// Appends the UTF-8 encoding of `cpt` (must be <= 0x10FFFF).
void AppendUtf8(uint32_t cpt, std::string* out);

// The length of the UTF-8 sequence a lead byte announces (1 for continuation bytes), as
// SentencePiece-style tokenizers split text into characters without validating it.
inline size_t Utf8LenFromLead(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool IsValidUtf8(std::string_view text);

namespace unicode_internal {
struct CodepointRange {
  uint32_t first;  // the range runs to the next entry's `first` - 1
  uint16_t flags;
};
extern const char kUnicodeVersion[];
extern const CodepointRange kCodepointRanges[];
extern const size_t kNumCodepointRanges;
}  // namespace unicode_internal

}  // namespace rsd
