#include "storage/common/api_key.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "storage/common/file_util.h"

namespace rsd {

absl::StatusOr<std::string> LoadApiKey(const std::string& file) {
  if (file.empty()) {
    const char* env = std::getenv("RSD_API_KEY");
    return env == nullptr ? std::string() : std::string(absl::StripAsciiWhitespace(env));
  }
  absl::StatusOr<std::string> text = ReadFileToString(file);
  if (!text.ok()) return absl::NotFoundError(absl::StrCat("cannot read --api-key-file ", file));
  const std::string key(absl::StripAsciiWhitespace(*text));
  if (key.empty() || key.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--api-key-file ", file, " does not hold one API key"));
  }
  return key;
}

std::string BearerOf(const std::string& key) {
  return key.empty() ? std::string() : "Bearer " + key;
}

}  // namespace rsd
