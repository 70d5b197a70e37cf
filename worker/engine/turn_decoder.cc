#include "worker/engine/turn_decoder.h"

#include <algorithm>

#include "storage/common/hash.h"
#include "worker/engine/sampler.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

// Length of the well-formed UTF-8 character starting at s[i] (RFC 3629: no overlongs,
// surrogates or values past U+10FFFF); 0 if it is malformed; -1 if s ends before it could be
// decided (a valid prefix of a character).
int CharLength(const std::string& s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  int n;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -1;
    const uint8_t b = static_cast<uint8_t>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
  }
  return n;
}

}  // namespace

std::string Utf8Stream::Convert(const std::string& bytes, bool final) {
  std::string out;
  size_t i = consumed_;
  while (i < bytes.size()) {
    const int n = CharLength(bytes, i);
    if (n < 0) {
      if (!final) break;  // may still become a character
      AppendUtf8(0xFFFD, &out);
      ++i;
      continue;
    }
    if (n == 0) {
      AppendUtf8(0xFFFD, &out);
      ++i;
      continue;
    }
    out.append(bytes, i, static_cast<size_t>(n));
    i += static_cast<size_t>(n);
  }
  consumed_ = i;
  emitted_ += static_cast<int64_t>(out.size());
  return out;
}

std::string Utf8Stream::Take(const std::string& bytes) { return Convert(bytes, false); }
std::string Utf8Stream::Finish(const std::string& bytes) { return Convert(bytes, true); }

TurnDecoder::TurnDecoder(const Tokenizer& tokenizer, std::vector<int32_t> stop_ids,
                         const GenerateParams& params)
    : tokenizer_(tokenizer), stop_ids_(std::move(stop_ids)), params_(params) {
  done_ = params_.max_tokens <= 0;
}

bool TurnDecoder::Next(std::span<const float> logits, int64_t position) {
  const int32_t tok = SampleToken(logits, params_.sampling, position);
  if (params_.record_logit_hashes) {
    logit_hashes_.push_back(Hash64(logits.data(), logits.size() * sizeof(float)));
  }
  tokens_.push_back(tok);
  const bool is_stop_token = params_.stop_at_eos &&
                             std::find(stop_ids_.begin(), stop_ids_.end(), tok) != stop_ids_.end();
  bool hit_stop = false;
  if (!is_stop_token) {
    const size_t before = text_.size();
    text_tokens_.push_back(tok);
    // The whole decode, not a concatenation of per-token decodes: a tokenizer may treat the
    // first token specially (a dropped leading space).
    text_ = tokenizer_.Decode(text_tokens_, false);
    for (const std::string& s : params_.stop) {
      if (s.empty()) continue;
      const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
      const size_t at = text_.find(s, from);
      if (at == std::string::npos) continue;
      hit_stop = true;
      stop_at_ = std::min(stop_at_, at);
    }
  }
  if (is_stop_token) finish_reason_ = "eos";
  if (hit_stop) finish_reason_ = "stop";
  done_ = is_stop_token || hit_stop ||
          static_cast<int>(tokens_.size()) >= params_.max_tokens;
  return done_;
}

namespace {

// Bytes at the end of `text` that are a proper prefix of some stop string: they may yet become one.
size_t StopPrefixTail(const std::string& text, const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    for (size_t n = std::min(s.size() - 1, text.size()); n > hold; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

std::string TurnDecoder::TakeText() {
  if (done_) return stream_.Finish(answer());
  // While running no stop string has matched (a match ends the turn), so answer() is text_.
  const size_t hold = StopPrefixTail(text_, params_.stop);
  return stream_.Take(text_.substr(0, text_.size() - hold));
}

}  // namespace rsd
