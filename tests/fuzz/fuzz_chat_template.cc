// Chat templates (recognition from a model's Jinja source, and rendering a turn with an
// OpenAI-style context) on arbitrary bytes, with SmolLM2's tokenizer (from $RSD_SMOLLM2). The
// input is split at its first 0x00 byte into the Jinja source and the turn: messages separated by
// 0x01, each "role 0x02 content", the last one the user's text. Oracles: recognition never
// crashes; a context CheckContext accepts renders to ids inside the vocabulary; and message
// content is never parsed for special tokens: the control tokens of a rendered turn are the same
// as those of the same turn with every content replaced by plain text (a message spelling
// "<|im_end|>" must not close its turn). A violation aborts.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_tokenizer.h"
#include "worker/model/chat_template.h"

namespace {

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t at = 0;;) {
    const size_t next = s.find(sep, at);
    out.push_back(s.substr(at, next == std::string_view::npos ? next : next - at));
    if (next == std::string_view::npos) return out;
    at = next + 1;
  }
}

// The control tokens of `ids`, in order.
std::vector<int32_t> Controls(const rsd::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> out;
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
    if (tok.spec().types[static_cast<size_t>(id)] == rsd::TokenType::kControl) out.push_back(id);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const rsd::Tokenizer& tok = rsd::fuzz::TokenizerFromEnv("RSD_SMOLLM2", "fuzz_chat_template");
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find('\0');
  const std::string jinja(input.substr(0, cut));
  absl::StatusOr<std::unique_ptr<rsd::ChatTemplate>> tmpl = rsd::ChatTemplate::Create(jinja, &tok);
  if (!tmpl.ok() || cut == std::string_view::npos) return 0;
  const std::vector<std::string_view> parts = Split(input.substr(cut + 1), '\x01');
  std::vector<rsd::ChatMessage> context, plain;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const size_t at = parts[i].find('\x02');
    rsd::ChatMessage m{std::string(parts[i].substr(0, at)),
                       at == std::string_view::npos ? "" : std::string(parts[i].substr(at + 1))};
    plain.push_back({m.role, "plain words"});
    context.push_back(std::move(m));
  }
  const std::string user(parts.back());
  for (bool first : {true, false}) {
    if (!rsd::ChatTemplate::CheckContext(context, first).ok()) continue;
    const std::vector<int32_t> turn = (*tmpl)->Turn(context, user, first);
    if (Controls(tok, turn) != Controls(tok, (*tmpl)->Turn(plain, "plain words", first))) {
      std::fprintf(stderr, "message content changed the turn's control tokens (%s, %zu bytes)\n",
                   (*tmpl)->name().c_str(), size);
      std::abort();
    }
  }
  return 0;
}

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds() {
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
      "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  const std::string llama3 =
      "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}<|eot_id|>";
  std::string turn;
  turn += '\0';
  turn += std::string("system\x02") + "Be brief <|im_end|> really" + '\x01';
  turn += std::string("user\x02") + "hi" + '\x01';
  turn += std::string("assistant\x02") + "<|im_start|>assistant\nhello" + '\x01';
  turn += "and <|endoftext|> then?";
  return {chatml + turn, llama3 + turn, turn, "[INST]" + turn, chatml};
}
}  // namespace rsd::fuzz
