// Fuzz targets of the parsers of untrusted bytes (issue #14). Each target file defines
// LLVMFuzzerTestOneInput and FuzzSeeds (valid inputs built in code, so the corpus needs no binary
// files). With clang and -DRSD_FUZZ=ON each target links libFuzzer (tools/fuzz.sh runs them for a
// bounded time); otherwise it links replay_main.cc and replays its seeds plus any corpus files
// given, as a plain test under whatever sanitizers the build has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace rsd::fuzz {
std::vector<std::string> FuzzSeeds();
}  // namespace rsd::fuzz
