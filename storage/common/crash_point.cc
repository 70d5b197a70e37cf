#include "storage/common/crash_point.h"

#include <signal.h>

#include <cstdlib>
#include <string>

#include "storage/common/log.h"

namespace rsd {

void CrashPoint(std::string_view name) {
  static const std::string armed = [] {
    const char* e = std::getenv("RSD_CRASH_AT");
    return std::string(e == nullptr ? "" : e);
  }();
  if (armed.empty() || name != armed) return;
  log::Warn("crash point reached: killing this process (RSD_CRASH_AT)",
            {{"point", std::string(name)}});
  ::raise(SIGKILL);
}

}  // namespace rsd
