// Crash points: named steps of a protocol (a migration's export, import and journal switch) at
// which a test can have a real process die as kill -9 would, to check what that step leaves
// behind. A process whose environment sets RSD_CRASH_AT=<name> logs the name and sends itself
// SIGKILL (no destructors, no flushes, no replies) the first time it reaches the point of that
// name. Without the variable (every deployment) a crash point is one comparison.
#pragma once

#include <string_view>

namespace rsd {

void CrashPoint(std::string_view name);

}  // namespace rsd
