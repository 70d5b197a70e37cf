// The regexes below are the ones llama.cpp runs for each pre-tokenizer (src/llama-vocab.cpp,
// llm_tokenizer_bpe), applied in sequence: each regex splits every word the previous one made,
// and the text between matches stays a word of its own. The GPT-2 and Llama 3 / Qwen2 regexes
// follow llama.cpp's hand-written matchers (src/unicode.cpp) decision by decision, since those
// define the reference split, quirks included. Class regexes that llama.cpp runs through
// std::regex over a "collapsed" text (one byte per code point: ASCII as itself, other code points
// as their class, non-ASCII whitespace as \v) reduce to the class predicates used here.
#include "worker/model/pretokenizer.h"

#include <string_view>

#include "absl/strings/str_cat.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

using Lengths = std::vector<uint32_t>;

constexpr uint32_t kOutOfRange = 0xFFFFFFFF;

// The text with its code point flags, and the word boundaries being emitted in one segment.
class Scanner {
 public:
  Scanner(std::span<const uint32_t> cpts, std::span<const uint16_t> flags, size_t begin, size_t end,
          Lengths* out)
      : cpts_(cpts), flags_(flags), end_(end), prev_(begin), out_(out) {}

  // Code point and flags at `pos`; past the segment they read as "nothing" (flags 0), as the
  // regex engine sees the end of the subject there.
  uint32_t Cpt(size_t pos) const { return pos < end_ ? cpts_[pos] : kOutOfRange; }
  uint16_t Flags(size_t pos) const { return pos < end_ ? flags_[pos] : 0; }
  size_t end() const { return end_; }

  // Ends the current word at `pos` (no-op for an empty word).
  void EmitTo(size_t pos) {
    if (pos > prev_) out_->push_back(static_cast<uint32_t>(pos - prev_));
    prev_ = pos;
  }

 private:
  std::span<const uint32_t> cpts_;
  std::span<const uint16_t> flags_;
  size_t end_;
  size_t prev_;
  Lengths* out_;
};

bool Is(uint16_t flags, uint16_t mask) { return (flags & mask) != 0; }
// [^\s\p{L}\p{N}] that is a real code point.
bool IsOther(uint16_t f) { return f != 0 && !Is(f, kCpWhitespace | kCpLetter | kCpNumber); }
uint32_t AsciiLower(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d at `pos` (ASCII case-insensitive if `any_case`): its length, or 0.
size_t MatchContraction(const Scanner& s, size_t pos, bool any_case) {
  if (s.Cpt(pos) != '\'' || pos + 1 >= s.end()) return 0;
  auto at = [&](size_t p) { return any_case ? AsciiLower(s.Cpt(p)) : s.Cpt(p); };
  const uint32_t c1 = at(pos + 1);
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= s.end()) return 0;
  const uint32_t c2 = at(pos + 2);
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// \s+(?!\S)|\s+ at `pos` given `n` whitespace code points there: the trailing run keeps its
// last space for the next word unless the run reaches the end of the segment.
size_t WhitespaceRunEnd(const Scanner& s, size_t pos, size_t n) {
  if (n > 1 && pos + n < s.end()) return pos + n - 1;
  return pos + n;
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void SplitGpt2(Scanner& s, size_t pos) {
  while (pos < s.end()) {
    if (size_t n = MatchContraction(s, pos, /*any_case=*/false)) {
      pos += n;
      s.EmitTo(pos);
      continue;
    }
    const bool space = s.Cpt(pos) == ' ';
    const uint16_t f2 = space ? s.Flags(pos + 1) : s.Flags(pos);
    if (Is(f2, kCpLetter) || Is(f2, kCpNumber)) {
      const uint16_t cls = Is(f2, kCpLetter) ? kCpLetter : kCpNumber;
      pos += space;
      while (Is(s.Flags(pos), cls)) ++pos;
      s.EmitTo(pos);
      continue;
    }
    if (IsOther(f2)) {
      pos += space;
      while (IsOther(s.Flags(pos))) ++pos;
      s.EmitTo(pos);
      continue;
    }
    size_t n = 0;
    while (Is(s.Flags(pos + n), kCpWhitespace)) ++n;
    pos = n > 0 ? WhitespaceRunEnd(s, pos, n) : pos + 1;
    s.EmitTo(pos);
  }
}

// Llama 3 (max_digits 3) and Qwen2 (max_digits 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
void SplitLlama3(Scanner& s, size_t pos, size_t max_digits) {
  auto is_crlf = [](uint32_t c) { return c == '\r' || c == '\n'; };
  while (pos < s.end()) {
    if (size_t n = MatchContraction(s, pos, /*any_case=*/true)) {
      pos += n;
      s.EmitTo(pos);
      continue;
    }
    const uint32_t c = s.Cpt(pos);
    const uint16_t f = s.Flags(pos);
    if (!is_crlf(c) && !Is(f, kCpNumber) && (Is(f, kCpLetter) || Is(s.Flags(pos + 1), kCpLetter))) {
      ++pos;  // the optional prefix, or the first letter
      while (Is(s.Flags(pos), kCpLetter)) ++pos;
      s.EmitTo(pos);
      continue;
    }
    if (Is(f, kCpNumber)) {
      size_t group = 0;
      while (Is(s.Flags(pos), kCpNumber)) {
        ++pos;
        if (++group == max_digits) {
          s.EmitTo(pos);
          group = 0;
        }
      }
      s.EmitTo(pos);
      continue;
    }
    // llama.cpp tests the unprefixed code point for "is a code point" here, so a lone space at the
    // end of the segment is taken as a word of its own.
    const bool space = c == ' ';
    const uint16_t f2 = space ? s.Flags(pos + 1) : f;
    if (!Is(f2, kCpWhitespace | kCpLetter | kCpNumber) && f != 0) {
      pos += space;
      while (IsOther(s.Flags(pos))) ++pos;
      while (is_crlf(s.Cpt(pos))) ++pos;
      s.EmitTo(pos);
      continue;
    }
    size_t n = 0;
    size_t last_crlf_end = 0;  // one past the last \r or \n in the whitespace run; 0 if none
    while (Is(s.Flags(pos + n), kCpWhitespace)) {
      if (is_crlf(s.Cpt(pos + n))) last_crlf_end = pos + n + 1;
      ++n;
    }
    if (last_crlf_end > 0) {
      pos = last_crlf_end;
    } else {
      pos = n > 0 ? WhitespaceRunEnd(s, pos, n) : pos + 1;
    }
    s.EmitTo(pos);
  }
}

// X+ for a class X: maximal runs of X are words, and so are the gaps between them.
template <typename Pred>
void SplitRuns(Scanner& s, size_t pos, std::span<const uint32_t> cpts, Pred in_class) {
  while (pos < s.end()) {
    const bool cls = in_class(cpts[pos]);
    while (pos < s.end() && in_class(cpts[pos]) == cls) ++pos;
    s.EmitTo(pos);
  }
}

// X for a class X: every member is a word alone; the gaps between members are words.
template <typename Pred>
void SplitEach(Scanner& s, size_t pos, std::span<const uint32_t> cpts, Pred in_class) {
  while (pos < s.end()) {
    if (in_class(cpts[pos])) {
      s.EmitTo(pos);
      s.EmitTo(++pos);
    } else {
      ++pos;
    }
  }
  s.EmitTo(pos);
}

// [0-9][0-9][0-9]: leftmost groups of three ASCII digits, scanning left to right.
void SplitDigitTriples(Scanner& s, size_t pos, std::span<const uint32_t> cpts) {
  auto digit = [&](size_t p) { return p < s.end() && cpts[p] >= '0' && cpts[p] <= '9'; };
  while (pos < s.end()) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      s.EmitTo(pos);
      pos += 3;
      s.EmitTo(pos);
    } else {
      ++pos;
    }
  }
  s.EmitTo(pos);
}

enum class Pass { kGpt2, kLlama3, kQwen2, kPunctRuns, kDigitRuns, kEachDigit, kDigitTriples };

Lengths RunPass(Pass pass, std::span<const uint32_t> cpts, std::span<const uint16_t> flags,
                const Lengths& words) {
  Lengths out;
  out.reserve(words.size() * 2);
  // [\p{P}\$\+<=>\^~\|]+ (default): Unicode punctuation plus the ASCII symbols named.
  auto punct = [&](uint32_t c) {
    if (c < 128 &&
        std::string_view("$+<=>^~|").find(static_cast<char>(c)) != std::string_view::npos) {
      return true;
    }
    const uint16_t f = CodepointFlags(c);
    return Is(f, kCpPunctuation) && !Is(f, kCpWhitespace);
  };
  auto number = [](uint32_t c) { return Is(CodepointFlags(c), kCpNumber); };
  size_t begin = 0;
  for (uint32_t len : words) {
    Scanner s(cpts, flags, begin, begin + len, &out);
    switch (pass) {
      case Pass::kGpt2:
        SplitGpt2(s, begin);
        break;
      case Pass::kLlama3:
        SplitLlama3(s, begin, 3);
        break;
      case Pass::kQwen2:
        SplitLlama3(s, begin, 1);
        break;
      case Pass::kPunctRuns:
        SplitRuns(s, begin, cpts, punct);
        break;
      case Pass::kDigitRuns:
        SplitRuns(s, begin, cpts, number);
        break;
      case Pass::kEachDigit:
        SplitEach(s, begin, cpts, number);
        break;
      case Pass::kDigitTriples:
        SplitDigitTriples(s, begin, cpts);
        break;
    }
    begin += len;
  }
  return out;
}

std::vector<Pass> PassesOf(PreTokenizerKind kind) {
  switch (kind) {
    case PreTokenizerKind::kDefault:
      return {Pass::kPunctRuns, Pass::kGpt2, Pass::kDigitRuns, Pass::kDigitTriples};
    case PreTokenizerKind::kGpt2:
      return {Pass::kGpt2};
    case PreTokenizerKind::kSmollm:
      return {Pass::kEachDigit, Pass::kGpt2};
    case PreTokenizerKind::kLlama3:
      return {Pass::kLlama3};
    case PreTokenizerKind::kQwen2:
      return {Pass::kQwen2};
  }
  return {};
}

}  // namespace

absl::StatusOr<PreTokenizer> PreTokenizerFromName(std::string_view name) {
  using K = PreTokenizerKind;
  struct Entry {
    std::string_view name;
    PreTokenizer pre;
  };
  // llama.cpp's names (llama_vocab::impl::load) for the splits implemented here; "gpt2" is our
  // alias of llama.cpp's "gpt-2". clean_spaces differences between them do not matter to us: we
  // decode without llama.cpp's space clean-up so that decoding is an exact inverse.
  static constexpr Entry kNames[] = {
      {"", {K::kDefault, false}},
      {"default", {K::kDefault, false}},
      {"gpt-2", {K::kGpt2, false}},
      {"gpt2", {K::kGpt2, false}},
      {"phi-2", {K::kGpt2, false}},
      {"mpt", {K::kGpt2, false}},
      {"olmo", {K::kGpt2, false}},
      {"jais", {K::kGpt2, false}},
      {"smollm", {K::kSmollm, false}},
      {"starcoder", {K::kSmollm, false}},
      {"refact", {K::kSmollm, false}},
      {"codeshell", {K::kSmollm, false}},
      {"command-r", {K::kSmollm, false}},
      {"llama3", {K::kLlama3, true}},
      {"llama-v3", {K::kLlama3, true}},
      {"llama-bpe", {K::kLlama3, true}},
      {"falcon3", {K::kLlama3, true}},
      {"dbrx", {K::kLlama3, false}},
      {"smaug-bpe", {K::kLlama3, false}},
      {"qwen2", {K::kQwen2, false}},
      {"deepseek-r1-qwen", {K::kQwen2, false}},
      {"stablelm2", {K::kQwen2, false}},
      {"megrez", {K::kQwen2, false}},
  };
  for (const Entry& e : kNames) {
    if (e.name == name) return e.pre;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported pre-tokenizer \"", std::string(name),
      "\" (supported: default, gpt-2, smollm, llama3/llama-bpe, qwen2 and their aliases)"));
}

std::vector<uint32_t> PreTokenize(PreTokenizerKind kind, std::span<const uint32_t> cpts) {
  if (cpts.empty()) return {};
  std::vector<uint16_t> flags(cpts.size());
  for (size_t i = 0; i < cpts.size(); ++i) flags[i] = CodepointFlags(cpts[i]);
  Lengths words = {static_cast<uint32_t>(cpts.size())};
  for (Pass pass : PassesOf(kind)) words = RunPass(pass, cpts, flags, words);
  return words;
}

}  // namespace rsd
