// The tokenizer of a real model for the tokenizer fuzz targets: loaded once from the GGUF file
// named by an environment variable. Without it the target says so and aborts, so that its replay
// test fails rather than passing without checking anything.
#pragma once

#include "worker/model/tokenizer.h"

namespace rsd::fuzz {

// `target` names the fuzz target in the message.
const Tokenizer& TokenizerFromEnv(const char* variable, const char* target);

}  // namespace rsd::fuzz
