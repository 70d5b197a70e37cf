// The API key a client presents (issue #13): rsdctl and rsd-worker take it from --api-key-file F
// or, without that flag, from the RSD_API_KEY environment variable, and send it as the gRPC
// metadata "authorization: Bearer <key>".
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace rsd {

// The key in `file` (surrounding whitespace removed) if `file` is non-empty, else $RSD_API_KEY,
// else "" (no key). NOT_FOUND naming the file if it cannot be read,
// INVALID_ARGUMENT naming it if it holds no key or more than one line.
absl::StatusOr<std::string> LoadApiKey(const std::string& file);

// "Bearer <key>", or "" for no key.
std::string BearerOf(const std::string& key);

}  // namespace rsd
