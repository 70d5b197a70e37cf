#include "tools/chat_script.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rsd {

absl::StatusOr<std::vector<std::string>> ReadChatScript(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the chat script"));
  std::vector<std::string> turns;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("content") || !j["content"].is_string() ||
        j.value("role", "user") != "user") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", n, ": expected {\"role\": \"user\", \"content\": \"...\"}"));
    }
    turns.push_back(j["content"].get<std::string>());
  }
  if (turns.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no turns"));
  return turns;
}

}  // namespace rsd
