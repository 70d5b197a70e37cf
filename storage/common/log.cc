#include "storage/common/log.h"

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace rsd::log {
namespace {

struct State {
  std::mutex mu;
  std::shared_ptr<spdlog::logger> logger;
  bool json = false;
};

State& Get() {
  static State* s = [] {
    auto* st = new State();
    st->logger = spdlog::stderr_logger_mt("rsd");
    st->logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %n: %v");
    return st;
  }();
  return *s;
}

std::string Quote(std::string_view s) {
  return nlohmann::json(std::string(s))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A text value needs quotes if it has spaces, quotes or '=' (so the line stays parseable).
std::string TextValue(const std::string& v) {
  if (!v.empty() && v.find_first_of(" \t\n\"=") == std::string::npos) return v;
  return Quote(v);
}

spdlog::level::level_enum SpdLevel(Level l) {
  switch (l) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

std::string Render(bool json, std::string_view message, std::initializer_list<Field> fields) {
  std::string out;
  if (json) {
    out = absl::StrCat("\"msg\":", Quote(message));
    for (const Field& f : fields) absl::StrAppend(&out, ",", Quote(f.key), ":", Quote(f.value));
    return out;
  }
  out = std::string(message);
  for (const Field& f : fields) {
    absl::StrAppend(&out, " ", absl::string_view(f.key.data(), f.key.size()), "=",
                    TextValue(f.value));
  }
  return out;
}

absl::Status Init(const std::string& program, const std::string& format, const std::string& level) {
  if (format != "text" && format != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format must be text or json, got '", format, "'"));
  }
  const spdlog::level::level_enum lv = spdlog::level::from_str(level);
  if (level != "debug" && level != "info" && level != "warn" && level != "error") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level must be debug, info, warn or error, got '", level, "'"));
  }
  State& s = Get();
  std::lock_guard<std::mutex> lock(s.mu);
  s.json = format == "json";
  auto logger =
      std::make_shared<spdlog::logger>(program, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_level(lv);
  logger->flush_on(spdlog::level::debug);  // every line reaches the log at once (crash safety)
  logger->set_pattern(s.json ? "{\"ts\":\"%Y-%m-%dT%H:%M:%S.%e%z\",\"level\":\"%l\",\"program\":"
                               "\"%n\",%v}"
                             : "%Y-%m-%dT%H:%M:%S.%e%z %l %n: %v");
  s.logger = std::move(logger);
  return absl::OkStatus();
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  State& s = Get();
  std::shared_ptr<spdlog::logger> logger;
  bool json;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    logger = s.logger;
    json = s.json;
  }
  if (!logger->should_log(SpdLevel(level))) return;
  logger->log(SpdLevel(level), "{}", Render(json, message, fields));
}

}  // namespace rsd::log
