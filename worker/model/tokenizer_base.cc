#include "worker/model/tokenizer_base.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace rsd {
namespace {

bool IsSpecialType(TokenType t) {
  return t == TokenType::kControl || t == TokenType::kUserDefined || t == TokenType::kUnknown;
}

// Texts llama.cpp always treats as end-of-generation control tokens, whatever type the model
// file gives them (llama_vocab::impl::load): end-of-turn markers, and the fill-in-the-middle
// pad/repo/file-separator markers it also stops at (SmolLM2's "<reponame>" is one).
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>",  "<|im_end|>", "<|end|>",    "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>",  "<EOT>",      "_<EOT>",     "<|end_of_text|>", "</s>",
    "<|fim_pad|>", "<fim-pad>",  "<fim_pad>",  "<|fim_repo|>",    "<|repo_name|>",
    "<fim-repo>",  "<REPO>",     "<reponame>", "<|file_sep|>",
};

}  // namespace

bool IsEndOfGenerationText(std::string_view text) {
  return std::find(std::begin(kEogTexts), std::end(kEogTexts), text) != std::end(kEogTexts);
}

absl::Status ValidateSpec(const TokenizerSpec& spec) {
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer has no tokens");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer has too many tokens: ", n));
  }
  if (spec.types.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", n, " tokens but ", spec.types.size(), " token types"));
  }
  if (!spec.scores.empty() && spec.scores.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer has ", n, " tokens but ", spec.scores.size(), " scores"));
  }
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = static_cast<int32_t>(spec.types[i]);
    if (t < 0 || t > static_cast<int32_t>(TokenType::kByte)) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " has invalid type ", t));
    }
  }
  const std::pair<const char*, int32_t> ids[] = {{"bos", spec.bos_id},
                                                 {"eos", spec.eos_id},
                                                 {"eot", spec.eot_id},
                                                 {"unk", spec.unk_id},
                                                 {"pad", spec.pad_id}};
  for (const auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " token id ", id, " is out of range [0, ", n, ")"));
    }
  }
  if (spec.add_bos && spec.bos_id < 0) {
    return absl::InvalidArgumentError("add_bos is set but the model has no bos token");
  }
  if (spec.add_eos && spec.eos_id < 0) {
    return absl::InvalidArgumentError("add_eos is set but the model has no eos token");
  }
  return absl::OkStatus();
}

TokenizerBase::TokenizerBase(TokenizerSpec spec) : spec_(std::move(spec)) {
  const int32_t n = static_cast<int32_t>(spec_.tokens.size());
  text_to_id_.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    text_to_id_[spec_.tokens[i]] = i;
    // llama.cpp makes these control tokens even when the file says otherwise, so they are parsed
    // as special and hidden in decoding like the other end-of-turn markers.
    if (IsEndOfGenerationText(spec_.tokens[i])) spec_.types[i] = TokenType::kControl;
  }
  for (int32_t i = 0; i < n; ++i) {
    if (IsSpecialType(spec_.types[i]) && !spec_.tokens[i].empty()) specials_.push_back(i);
  }
  std::stable_sort(specials_.begin(), specials_.end(), [&](int32_t a, int32_t b) {
    return spec_.tokens[a].size() > spec_.tokens[b].size();
  });
}

int32_t TokenizerBase::TextToId(std::string_view text) const {
  // Abseil here has its own string_view type, which the heterogeneous lookup needs.
  auto it = text_to_id_.find(absl::string_view(text.data(), text.size()));
  return it == text_to_id_.end() ? -1 : it->second;
}

std::vector<int32_t> TokenizerBase::Encode(std::string_view text, bool parse_special) const {
  const TextSegment segment{text, parse_special};
  return EncodeSegments(std::span<const TextSegment>(&segment, 1));
}

void TokenizerBase::Partition(std::string_view text, bool parse_special,
                              std::vector<Fragment>* frags) const {
  // `text` is the tail of the joined input that this segment occupies; frags hold one raw
  // fragment covering it. Like llama.cpp, each special token in turn (longest first) splits every
  // raw fragment left, so a longer token wins over a shorter one anywhere in the text.
  for (int32_t id : specials_) {
    if (!parse_special && spec_.types[id] != TokenType::kUserDefined) continue;
    const std::string& t = spec_.tokens[id];
    if (text.substr(frags->front().begin).find(t) == std::string_view::npos) continue;
    std::vector<Fragment> next;
    next.reserve(frags->size() + 2);
    for (const Fragment& f : *frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.begin;
      const std::string_view upto = text.substr(0, f.end);
      for (size_t m; (m = upto.find(t, pos)) != std::string_view::npos; pos = m + t.size()) {
        if (m > pos) next.push_back({-1, pos, m});
        next.push_back({id, m, m + t.size()});
      }
      if (pos < f.end) next.push_back({-1, pos, f.end});
    }
    *frags = std::move(next);
  }
}

std::vector<int32_t> TokenizerBase::EncodeSegments(std::span<const TextSegment> segments) const {
  std::string joined;
  for (const TextSegment& s : segments) joined.append(s.text);
  std::vector<Fragment> all;
  size_t offset = 0;
  for (const TextSegment& s : segments) {
    if (s.text.empty()) continue;
    std::vector<Fragment> frags = {{-1, offset, offset + s.text.size()}};
    Partition(std::string_view(joined).substr(0, offset + s.text.size()), s.parse_special, &frags);
    for (const Fragment& f : frags) {
      // Raw text continuing across a segment boundary is one piece of text, as in the whole
      // rendered prompt.
      if (f.token < 0 && !all.empty() && all.back().token < 0 && all.back().end == f.begin) {
        all.back().end = f.end;
      } else {
        all.push_back(f);
      }
    }
    offset += s.text.size();
  }
  std::vector<int32_t> out;
  out.reserve(joined.size() / 3 + 4);
  bool after_special = true;
  for (const Fragment& f : all) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
    } else {
      EncodeText(std::string_view(joined).substr(f.begin, f.end - f.begin), after_special, &out);
      after_special = false;
    }
  }
  return out;
}

std::string TokenizerBase::Decode(std::span<const int32_t> ids, bool render_special) const {
  std::string out;
  bool strip_space = spec_.add_space_prefix;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const TokenType type = spec_.types[id];
    const bool hidden =
        !render_special && (type == TokenType::kControl || type == TokenType::kUnknown);
    std::string_view piece = hidden ? std::string_view() : std::string_view(pieces_[id]);
    // llama.cpp drops one leading space of the first token only, even when that token renders as
    // nothing, to undo the space prefix the encoder added in front of the text.
    if (strip_space && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    strip_space = false;
    out.append(piece);
  }
  return out;
}

std::string TokenizerBase::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return pieces_[id];
}

}  // namespace rsd
