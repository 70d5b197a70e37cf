// The tokenizer of a real model for the tokenizer fuzz targets: loaded once from the GGUF file
// named by an environment variable. Without it the target says so and aborts, so that its replay
// test fails rather than passing without checking anything.
#pragma once

#include <functional>
#include <string_view>

#include "worker/model/tokenizer.h"

namespace rsd::fuzz {

// `target` names the fuzz target in the message.
const Tokenizer& TokenizerFromEnv(const char* variable, const char* target);

// Encodes `text` with and without special-token parsing: every id must lie in the vocabulary, and
// where `round_trips(special)` holds, decoding (`render_special`) must give `text` back. A
// violation prints the input's bytes and aborts.
void CheckEncoding(const Tokenizer& tok, std::string_view text,
                   const std::function<bool(bool special)>& round_trips, bool render_special);

}  // namespace rsd::fuzz
