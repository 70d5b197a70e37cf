// Byte-level BPE ("gpt2" models): text -> code points -> pre-tokenizer words -> bytes -> GPT-2's
// byte-to-character mapping -> merges by rank, lowest rank first, leftmost first among equals
// (llama.cpp's llm_tokenizer_bpe_session).
#include <array>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/model/pretokenizer.h"
#include "worker/model/tokenizer_base.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100.. in byte order, so every byte has a visible character in the vocabulary.
std::array<uint32_t, 256> ByteToCodepoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

// Parses "<0xXX>" (byte-type tokens); -1 if `text` is not one.
int ParseByteToken(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int v = 0;
  for (char c : text.substr(3, 2)) {
    const int d = (c >= '0' && c <= '9')   ? c - '0'
                  : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                  : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                           : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

class BpeTokenizer final : public TokenizerBase {
 public:
  BpeTokenizer(TokenizerSpec spec, PreTokenizer pre) : TokenizerBase(std::move(spec)), pre_(pre) {}

  absl::Status Init() {
    const std::array<uint32_t, 256> byte_cpt = ByteToCodepoint();
    absl::flat_hash_map<uint32_t, uint8_t> cpt_byte;
    for (uint32_t b = 0; b < 256; ++b) {
      std::string s;
      AppendUtf8(byte_cpt[b], &s);
      byte_text_[b] = s;
      byte_token_[b] = TextToId(s);
      cpt_byte[byte_cpt[b]] = static_cast<uint8_t>(b);
    }
    RSD_RETURN_IF_ERROR(BuildMerges());
    const TokenizerSpec& sp = spec();
    pieces_.resize(sp.tokens.size());
    for (size_t i = 0; i < sp.tokens.size(); ++i) {
      const std::string& text = sp.tokens[i];
      switch (sp.types[i]) {
        case TokenType::kNormal:
          // Characters outside the byte alphabet cannot come from the encoder; keep them as text.
          for (uint32_t c : DecodeUtf8Lax(text)) {
            auto it = cpt_byte.find(c);
            if (it != cpt_byte.end()) {
              pieces_[i].push_back(static_cast<char>(it->second));
            } else {
              AppendUtf8(c, &pieces_[i]);
            }
          }
          break;
        case TokenType::kByte: {
          const int b = ParseByteToken(text);
          pieces_[i] = b >= 0 ? std::string(1, static_cast<char>(b)) : text;
          break;
        }
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
    return absl::OkStatus();
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::Status BuildMerges() {
    const std::vector<std::string>& merges = spec().merges;
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string& m = merges[rank];
      // As llama.cpp: the separator is the first space after the first character.
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("merge ", rank, " \"", m, "\" has no space"));
      }
      const std::string_view left = std::string_view(m).substr(0, sp);
      const std::string_view right = std::string_view(m).substr(sp + 1);
      const int32_t l = TextToId(left), r = TextToId(right);
      const std::string joined = std::string(left) + std::string(right);
      const int32_t res = TextToId(joined);
      if (l < 0 || r < 0 || res < 0) {
        return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " \"", m,
                                                       "\" names a piece that is not a token: \"",
                                                       l < 0   ? std::string(left)
                                                       : r < 0 ? std::string(right)
                                                               : joined,
                                                       "\""));
      }
      merges_.try_emplace(PairKey(l, r), Merge{static_cast<int32_t>(rank), res});
    }
    return absl::OkStatus();
  }

  void EncodeText(std::string_view text, bool /*after_special*/,
                  std::vector<int32_t>* out) const override {
    const std::vector<uint32_t> cpts = DecodeUtf8Lax(text);
    const std::vector<uint32_t> words = PreTokenize(pre_.kind, cpts);
    std::string word;
    size_t pos = 0;
    for (uint32_t len : words) {
      word.clear();
      for (size_t i = pos; i < pos + len; ++i) AppendUtf8(cpts[i], &word);
      pos += len;
      EncodeWord(word, out);
    }
  }

  void EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const {
    if (pre_.ignore_merges) {
      std::string mapped;
      for (char c : bytes) mapped += byte_text_[static_cast<uint8_t>(c)];
      if (int32_t id = TextToId(mapped); id >= 0) {
        out->push_back(id);
        return;
      }
    }
    struct Symbol {
      int32_t id;  // -1: a byte with no token of its own (emitted as nothing, as in llama.cpp)
      int32_t prev;
      int32_t next;
    };
    const int32_t n = static_cast<int32_t>(bytes.size());
    std::vector<Symbol> syms(n);
    for (int32_t i = 0; i < n; ++i) {
      syms[i] = {byte_token_[static_cast<uint8_t>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1};
    }
    struct Candidate {
      int32_t rank;
      int32_t left;
      int32_t left_id;
      int32_t right_id;
      int32_t result;
      bool operator<(const Candidate& o) const {  // priority_queue pops the greatest
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::priority_queue<Candidate> queue;
    auto consider = [&](int32_t left) {
      if (left < 0 || syms[left].next < 0) return;
      const int32_t a = syms[left].id, b = syms[syms[left].next].id;
      if (a < 0 || b < 0) return;
      auto it = merges_.find(PairKey(a, b));
      if (it != merges_.end()) queue.push({it->second.rank, left, a, b, it->second.result});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& l = syms[c.left];
      // Stale if either side has merged since: merges only grow symbols, so ids tell.
      if (l.id != c.left_id || l.next < 0 || syms[l.next].id != c.right_id) continue;
      Symbol& r = syms[l.next];
      l.id = c.result;
      r.id = -2;  // merged away
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }
    for (int32_t i = 0; i >= 0 && i < n; i = syms[i].next) {
      if (syms[i].id >= 0) out->push_back(syms[i].id);
    }
  }

  PreTokenizer pre_;
  std::array<std::string, 256> byte_text_;  // byte -> its character in the vocabulary (UTF-8)
  std::array<int32_t, 256> byte_token_;     // byte -> token of that character, -1 if none
  absl::flat_hash_map<uint64_t, Merge> merges_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> CreateBpeTokenizer(TokenizerSpec spec) {
  RSD_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizerFromName(spec.pre));
  auto tok = std::make_unique<BpeTokenizer>(std::move(spec), pre);
  RSD_RETURN_IF_ERROR(tok->Init());
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

}  // namespace rsd
