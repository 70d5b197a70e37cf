// Chat scripts: JSON Lines of {"role": "user", "content": "..."}, one user turn a line (blank lines
// skipped). Read by `rsd-run chat` and `rsdctl chat --script`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rsd {

// The user turns of the script at `path`. NOT_FOUND if it cannot be opened; INVALID_ARGUMENT
// naming the file and line of one that is not a user message, or a script with no turns.
absl::StatusOr<std::vector<std::string>> ReadChatScript(const std::string& path);

}  // namespace rsd
