// Structured logs for the servers, through spdlog: one line per event on stderr with a timestamp,
// a level, the program, a message and key=value fields (session, turn, worker, ...), as text or as
// one JSON object per line (--log-format json) for log collectors. Before Init, lines go out as
// text with the program "rsd".
//
// Thread safety: every function may be called from any thread.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace rsd::log {

enum class Level { kDebug, kInfo, kWarn, kError };

struct Field {
  std::string_view key;
  std::string value;
};

// `format` "text" or "json", `level` "debug", "info", "warn" or "error" (lines below it are
// dropped). INVALID_ARGUMENT naming the value otherwise.
absl::Status Init(const std::string& program, const std::string& format, const std::string& level);

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});
inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kInfo, m, f);
}
inline void Warn(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kWarn, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kError, m, f);
}

// The line Write would emit (without the timestamp), for tests.
std::string Render(bool json, std::string_view message, std::initializer_list<Field> fields);

}  // namespace rsd::log
