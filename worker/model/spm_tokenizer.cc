// SentencePiece-style BPE ("llama" models), as llama.cpp's llm_tokenizer_spm_session: spaces
// become U+2581, the text is cut into UTF-8 characters (by lead byte, without validation), and
// adjacent symbols whose concatenation is a token merge, highest token score first, leftmost
// first among equals. Symbols left that are not tokens go out as <0xXX> byte tokens.
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <queue>
#include <utility>

#include "worker/model/tokenizer_base.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

class SpmTokenizer final : public TokenizerBase {
 public:
  explicit SpmTokenizer(TokenizerSpec spec) : TokenizerBase(std::move(spec)) {
    // Byte tokens are looked up by text on purpose: they are kByte, so PieceId would refuse them.
    const TokenizerSpec& sp = this->spec();
    for (int b = 0; b < 256; ++b) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "<0x%02X>", b);
      int32_t id = TextToId(hex);
      // llama.cpp falls back to a token spelled as the byte itself.
      if (id < 0) id = TextToId(std::string(1, static_cast<char>(b)));
      byte_token_[b] = id;
    }
    pieces_.resize(sp.tokens.size());
    for (size_t i = 0; i < sp.tokens.size(); ++i) {
      const std::string& text = sp.tokens[i];
      switch (sp.types[i]) {
        case TokenType::kNormal:
          for (size_t pos = 0; pos < text.size();) {
            if (text.compare(pos, kSpace.size(), kSpace) == 0) {
              pieces_[i].push_back(' ');
              pos += kSpace.size();
            } else {
              pieces_[i].push_back(text[pos++]);
            }
          }
          break;
        case TokenType::kByte:
          pieces_[i] = ByteOf(text);
          break;
        case TokenType::kControl:
        case TokenType::kUserDefined:
        case TokenType::kUnknown:
          pieces_[i] = text;
          break;
        case TokenType::kUndefined:
        case TokenType::kUnused:
          break;
      }
    }
  }

 private:
  static std::string ByteOf(const std::string& text) {
    unsigned v = 0;
    char end = 0;
    if (text.size() == 6 && std::sscanf(text.c_str(), "<0x%2x%c", &v, &end) == 2 && end == '>') {
      return std::string(1, static_cast<char>(v));
    }
    return text;
  }

  // The token a piece of raw text may become. Only normal and user-defined tokens qualify: as in
  // SentencePiece, merges never produce control, unknown, byte or unused tokens, so raw text such
  // as "</s>" can never turn into a control token (llama.cpp would merge into one if the pieces
  // allowed it; with our models' vocabularies no such merge exists).
  int32_t PieceId(std::string_view piece) const {
    const int32_t id = TextToId(piece);
    if (id < 0) return -1;
    const TokenType t = spec().types[id];
    return (t == TokenType::kNormal || t == TokenType::kUserDefined) ? id : -1;
  }

  // A NaN score would break the queue's ordering; it ranks last instead.
  float Score(int32_t id) const {
    const float s = spec().scores.empty() ? 0.0f : spec().scores[id];
    return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
  }

  // The text the merges run on: spaces as U+2581, one more in front after a special token when
  // the model adds a space prefix.
  std::string Escape(std::string_view raw, bool after_special) const {
    std::string text;
    text.reserve(raw.size() + raw.size() / 4 + 3);
    if (spec().add_space_prefix && after_special) text.append(kSpace);
    for (char c : raw) {
      if (c == ' ') {
        text.append(kSpace);
      } else {
        text.push_back(c);
      }
    }
    return text;
  }

  // One symbol left after the merges: its token, or else its bytes as byte tokens (a byte without
  // one becomes the unknown token, or nothing).
  void AppendPiece(std::string_view piece, std::vector<int32_t>* out) const {
    const int32_t id = PieceId(piece);
    if (id >= 0) {
      out->push_back(id);
      return;
    }
    for (char c : piece) {
      const int32_t b = byte_token_[static_cast<uint8_t>(c)];
      if (b >= 0) {
        out->push_back(b);
      } else if (spec().unk_id >= 0) {
        out->push_back(spec().unk_id);
      }
    }
  }

  void EncodeText(std::string_view raw, bool after_special,
                  std::vector<int32_t>* out) const override {
    const std::string text = Escape(raw, after_special);
    struct Symbol {
      uint32_t begin;
      uint32_t len;  // 0: merged away
      int32_t prev;
      int32_t next;
    };
    std::vector<Symbol> syms;
    syms.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      const size_t len =
          std::min(Utf8LenFromLead(static_cast<uint8_t>(text[pos])), text.size() - pos);
      const int32_t idx = static_cast<int32_t>(syms.size());
      syms.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), idx - 1,
                      pos + len < text.size() ? idx + 1 : -1});
      pos += len;
    }
    struct Candidate {
      float score;
      int32_t left;
      uint32_t size;  // bytes of the pair when queued; a different sum means it is stale
      bool operator<(const Candidate& o) const {  // priority_queue pops the greatest
        return score != o.score ? score < o.score : left > o.left;
      }
    };
    std::priority_queue<Candidate> queue;
    auto consider = [&](int32_t left) {
      if (left < 0 || syms[left].next < 0) return;
      const Symbol& l = syms[left];
      const uint32_t size = l.len + syms[l.next].len;
      const int32_t id = PieceId(std::string_view(text).substr(l.begin, size));
      if (id >= 0) queue.push({Score(id), left, size});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(syms.size()); ++i) consider(i);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& l = syms[c.left];
      if (l.len == 0 || l.next < 0) continue;
      Symbol& r = syms[l.next];
      if (r.len == 0 || l.len + r.len != c.size) continue;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
      AppendPiece(std::string_view(text).substr(syms[i].begin, syms[i].len), out);
    }
  }

  std::array<int32_t, 256> byte_token_;  // byte -> <0xXX> token (or the byte's own), -1 if none
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateSpmTokenizer(TokenizerSpec spec) {
  return std::unique_ptr<Tokenizer>(std::make_unique<SpmTokenizer>(std::move(spec)));
}

}  // namespace rsd
