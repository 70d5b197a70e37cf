// Chat formats are recognised from marker strings in the template source and rendered here by
// hand: we need token ids per turn (the session log grows turn by turn and is never re-tokenized),
// which a text-rendering Jinja engine would not give us anyway. Each turn is tokenized in one
// EncodeSegments call, so its tokens equal those of the whole rendered prompt at that place;
// user text is a segment without special-token parsing.
#include "worker/model/chat_template.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "worker/model/tokenizer_base.h"
#include "worker/model/unicode.h"

namespace rsd {
namespace {

struct Format {
  std::string name;
  std::string default_system;
  // Turn 1's system block is system_prefix + prompt + system_suffix (only if a prompt exists).
  std::string system_prefix;
  std::string system_suffix;
  // Llama 2 puts the system block inside the first [INST], after its opening marker.
  bool system_inside_user = false;
  std::string user_prefix;
  std::string user_suffix;  // ends with the header the assistant continues from
  bool trim_user = false;   // the template applies trim/strip to the content
  bool bos_every_turn = false;
  // Closing the assistant turn: text when the generation stopped otherwise, text after the
  // end-of-turn token when the model produced it, and whether the closing is the EOS token.
  std::string end_text;
  std::string end_text_after_eot;
  bool end_with_eos = false;
};

// Strips what Jinja's trim / Python's str.strip() strip: Unicode whitespace at the ends.
std::string Trim(const std::string& s, bool left) {
  const std::vector<uint32_t> cpts = DecodeUtf8Lax(s);
  size_t b = 0, e = cpts.size();
  auto ws = [&](size_t i) { return (CodepointFlags(cpts[i]) & kCpWhitespace) != 0; };
  while (left && b < e && ws(b)) ++b;
  while (e > b && ws(e - 1)) --e;
  if (b == 0 && e == cpts.size()) return s;
  // Cut by bytes: count the bytes of the stripped code points at each end.
  size_t lead = 0, trail = 0;
  for (size_t i = 0; i < b; ++i) {
    std::string tmp;
    AppendUtf8(cpts[i], &tmp);
    lead += tmp.size();
  }
  for (size_t i = e; i < cpts.size(); ++i) {
    std::string tmp;
    AppendUtf8(cpts[i], &tmp);
    trail += tmp.size();
  }
  return s.substr(lead, s.size() - lead - trail);
}

// Jinja string-literal escapes that appear in template sources.
std::string Unescape(std::string_view s) {
  return absl::StrReplaceAll(std::string(s),
                             {{"\\n", "\n"}, {"\\'", "'"}, {"\\\"", "\""}, {"\\\\", "\\"}});
}

// The literal text between `open` (followed by a newline, real or escaped) and `close`, where it
// is plain text rather than an expression: e.g. the default system prompt of a ChatML template,
// '<|im_start|>system\nYou are ...<|im_end|>\n'. "" if the template has none.
std::string FindLiteralBlock(const std::string& src, std::string_view open,
                             std::string_view close) {
  for (size_t at = src.find(open); at != std::string::npos; at = src.find(open, at + 1)) {
    size_t body = at + open.size();
    if (src.compare(body, 1, "\n") == 0) {
      body += 1;
    } else if (src.compare(body, 2, "\\n") == 0) {
      body += 2;
    } else {
      continue;
    }
    const size_t end = src.find(close, body);
    if (end == std::string::npos) continue;
    const std::string_view text = std::string_view(src).substr(body, end - body);
    // A quote, a brace or a '+' means we are looking at an expression such as
    // '<|im_start|>system\n' + message['content'], not at a fixed prompt.
    if (text.empty() || text.find_first_of("'\"{}+") != std::string_view::npos) continue;
    return Unescape(text);
  }
  return "";
}

// The string literal assigned by `{% set <name> = '...' %}` / "..." in the source, or "".
std::string FindSetLiteral(const std::string& src, std::string_view name) {
  const std::string key = absl::StrCat("set ", std::string(name), " = ");
  for (size_t at = src.find(key); at != std::string::npos; at = src.find(key, at + 1)) {
    const size_t q = at + key.size();
    if (q >= src.size() || (src[q] != '\'' && src[q] != '"')) continue;
    const size_t end = src.find(src[q], q + 1);
    if (end == std::string::npos) continue;
    return Unescape(std::string_view(src).substr(q + 1, end - q - 1));
  }
  return "";
}

Format ChatMl(const std::string& src) {
  Format f;
  f.name = "chatml";
  f.default_system = FindLiteralBlock(src, "<|im_start|>system", "<|im_end|>");
  f.system_prefix = "<|im_start|>system\n";
  f.system_suffix = "<|im_end|>\n";
  f.user_prefix = "<|im_start|>user\n";
  f.user_suffix = "<|im_end|>\n<|im_start|>assistant\n";
  f.end_text = "<|im_end|>\n";
  f.end_text_after_eot = "\n";
  return f;
}

Format Llama3(const std::string& src) {
  Format f;
  f.name = "llama3";
  // Llama 3.1 always opens with a system block holding its knowledge-cutoff preamble.
  if (src.find("Cutting Knowledge Date: December 2023") != std::string::npos) {
    std::string date = FindSetLiteral(src, "date_string");
    if (date.empty()) date = "26 Jul 2024";
    f.default_system =
        absl::StrCat("Cutting Knowledge Date: December 2023\nToday Date: ", date, "\n\n");
  }
  f.system_prefix = "<|start_header_id|>system<|end_header_id|>\n\n";
  f.system_suffix = "<|eot_id|>";
  f.user_prefix = "<|start_header_id|>user<|end_header_id|>\n\n";
  f.user_suffix = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
  f.trim_user = true;
  f.end_text = "<|eot_id|>";
  return f;
}

Format Llama2(const std::string& src) {
  Format f;
  f.name = "llama2";
  f.default_system = FindSetLiteral(src, "system_message");
  f.system_prefix = "<<SYS>>\n";
  f.system_suffix = "\n<</SYS>>\n\n";
  f.system_inside_user = true;
  f.user_prefix = "[INST] ";
  f.user_suffix = " [/INST]";
  f.trim_user = true;
  f.bos_every_turn = true;
  f.end_with_eos = true;
  return f;
}

Format Mistral(const std::string& src) {
  Format f;
  f.name = "mistral";
  // v0.1/v0.2 templates put spaces inside the markers' literals, v0.3+ do not.
  const bool spaced = src.find("[INST] ") != std::string::npos;
  f.user_prefix = spaced ? "[INST] " : "[INST]";
  f.user_suffix = spaced ? " [/INST]" : "[/INST]";
  f.end_with_eos = true;
  return f;
}

Format Plain() {
  Format f;
  f.name = "plain (no template in the model: \"User: {text}\\nAssistant:\")";
  f.user_prefix = "User: ";
  f.user_suffix = "\nAssistant:";
  f.end_text = "\n";
  f.end_text_after_eot = "\n";
  return f;
}

class FormatTemplate final : public ChatTemplate {
 public:
  FormatTemplate(Format format, const Tokenizer* tok) : f_(std::move(format)), tok_(tok) {}

  std::string name() const override { return f_.name; }
  std::string default_system_prompt() const override { return f_.default_system; }

  std::vector<int32_t> Turn(const std::vector<ChatMessage>& context, const std::string& user_text,
                            bool first_turn) const override {
    size_t i = 0;
    const std::string* system = nullptr;  // null: the default
    if (!context.empty() && context[0].role == "system") system = &context[i++].content;
    std::vector<int32_t> out;
    for (; i + 1 < context.size(); i += 2) {
      Append(UserBlock(context[i].content, first_turn, system), &out);
      Append(tok_->Encode(context[i + 1].content, /*parse_special=*/false), &out);
      Append(EndOfAssistantTurn(false), &out);
      first_turn = false;
    }
    Append(UserBlock(user_text, first_turn, system), &out);
    return out;
  }

  std::vector<int32_t> EndOfAssistantTurn(bool generated_eot) const override {
    if (f_.end_with_eos) {
      const int32_t eos = tok_->spec().eos_id;
      return generated_eot || eos < 0 ? std::vector<int32_t>{} : std::vector<int32_t>{eos};
    }
    return tok_->Encode(generated_eot ? f_.end_text_after_eot : f_.end_text,
                        /*parse_special=*/true);
  }

  std::vector<int32_t> StopTokens() const override {
    const TokenizerSpec& spec = tok_->spec();
    std::vector<int32_t> ids;
    if (spec.eos_id >= 0) ids.push_back(spec.eos_id);
    if (spec.eot_id >= 0) ids.push_back(spec.eot_id);
    for (int32_t i = 0; i < tok_->vocab_size(); ++i) {
      if (tok_->IsControl(i) && IsEndOfGenerationText(spec.tokens[i])) ids.push_back(i);
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
  }

 private:
  static void Append(const std::vector<int32_t>& tokens, std::vector<int32_t>* out) {
    out->insert(out->end(), tokens.begin(), tokens.end());
  }

  // One user message with its template, BOS and, in the first turn, the system block (`system`,
  // or the default if null). A format without a system block puts a given system prompt before
  // the first message's text, as those models' templates do.
  std::vector<int32_t> UserBlock(const std::string& user_text, bool first_turn,
                                 const std::string* system_text) const {
    const TokenizerSpec& spec = tok_->spec();
    const std::string& sys = system_text != nullptr ? *system_text : f_.default_system;
    const bool has_block = !f_.system_prefix.empty();
    // A given system prompt is rendered even if empty, as the models' templates do.
    const bool system = first_turn && has_block && (system_text != nullptr || !sys.empty());
    std::string raw = user_text;
    if (first_turn && !has_block && !sys.empty()) raw = absl::StrCat(sys, "\n\n", user_text);
    // Llama 2 strips the whole "<<SYS>>...<</SYS>>\n\n" + text, so only the text's end then.
    const std::string text =
        f_.trim_user ? Trim(raw, /*left=*/!(system && f_.system_inside_user)) : raw;
    std::vector<TextSegment> segs;
    // A client's system prompt is text like any message: never parsed for special tokens.
    const bool parse_sys = system_text == nullptr;
    if (system && !f_.system_inside_user) {
      segs.push_back({f_.system_prefix, true});
      segs.push_back({sys, parse_sys});
      segs.push_back({f_.system_suffix, true});
    }
    segs.push_back({f_.user_prefix, true});
    if (system && f_.system_inside_user) {
      segs.push_back({f_.system_prefix, true});
      segs.push_back({sys, parse_sys});
      segs.push_back({f_.system_suffix, true});
    }
    segs.push_back({text, false});
    segs.push_back({f_.user_suffix, true});
    std::vector<int32_t> out;
    const bool bos = spec.bos_id >= 0 && (f_.bos_every_turn || (first_turn && spec.add_bos));
    if (bos) out.push_back(spec.bos_id);
    Append(tok_->EncodeSegments(segs), &out);
    return out;
  }

  Format f_;
  const Tokenizer* tok_;
};

bool Contains(const std::string& s, std::string_view what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

absl::Status ChatTemplate::CheckContext(const std::vector<ChatMessage>& context, bool first_turn) {
  size_t i = 0;
  if (!context.empty() && context[0].role == "system") {
    if (!first_turn) {
      return absl::InvalidArgumentError(
          "a system message can only open a session (this session already has turns)");
    }
    i = 1;
  }
  for (; i < context.size(); ++i) {
    const std::string& role = context[i].role;
    const bool user_slot = (i - (context[0].role == "system" ? 1 : 0)) % 2 == 0;
    const char* want = user_slot ? "user" : "assistant";
    if (role != want) {
      return absl::InvalidArgumentError(absl::StrCat(
          "message ", i, " has role \"", role.substr(0, 32), "\"; expected \"", want,
          "\" (an optional system message first, then user and assistant alternating, then the "
          "new user message)"));
    }
  }
  const size_t rest = context.size() - (!context.empty() && context[0].role == "system" ? 1 : 0);
  if (rest % 2 != 0) {
    return absl::InvalidArgumentError(
        "the messages before the new user message must end with an assistant message");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(const std::string& jinja,
                                                                   const Tokenizer* tokenizer) {
  if (tokenizer == nullptr) return absl::InvalidArgumentError("chat template needs a tokenizer");
  Format f;
  if (jinja.find_first_not_of(" \t\r\n") == std::string::npos) {
    f = Plain();
  } else if (Contains(jinja, "<|im_start|>") && Contains(jinja, "<|im_end|>")) {
    f = ChatMl(jinja);
  } else if (Contains(jinja, "<|start_header_id|>") && Contains(jinja, "<|eot_id|>")) {
    f = Llama3(jinja);
  } else if (Contains(jinja, "[INST]") && Contains(jinja, "<<SYS>>")) {
    f = Llama2(jinja);
  } else if (Contains(jinja, "[INST]")) {
    f = Mistral(jinja);
  } else {
    return absl::UnimplementedError(absl::StrCat(
        "unrecognised chat template (supported: ChatML, Llama 2, Llama 3, Mistral): \"",
        jinja.substr(0, 120), jinja.size() > 120 ? "...\"" : "\""));
  }
  return std::unique_ptr<ChatTemplate>(std::make_unique<FormatTemplate>(std::move(f), tokenizer));
}

}  // namespace rsd
