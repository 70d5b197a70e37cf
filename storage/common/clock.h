// Monotonic time in seconds, for durations, timeouts and idle times (never wall-clock dates).
#pragma once

#include <chrono>

namespace rsd {

inline double MonotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace rsd
