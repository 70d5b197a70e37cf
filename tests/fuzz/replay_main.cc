// The fuzz targets without libFuzzer: replays the target's built-in seeds, every prefix of each
// seed (truncations are the commonest damage), each seed with every byte flipped in turn, and the
// files or directories named on the command line. `--write-seeds DIR` writes the seeds as a
// starting corpus for libFuzzer instead.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/fuzz/fuzz.h"

namespace {

int Run(const std::string& input) {
  return LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> seeds = rsd::fuzz::FuzzSeeds();
  if (argc == 3 && std::string(argv[1]) == "--write-seeds") {
    std::filesystem::create_directories(argv[2]);
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream(std::filesystem::path(argv[2]) / ("seed-" + std::to_string(i)),
                    std::ios::binary)
          << seeds[i];
    }
    return 0;
  }
  size_t runs = 0;
  for (const std::string& seed : seeds) {
    for (size_t n = 0; n <= seed.size(); ++n, ++runs) Run(seed.substr(0, n));
    for (size_t i = 0; i < seed.size(); ++i, ++runs) {
      std::string flipped = seed;
      flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
      Run(flipped);
    }
  }
  for (int a = 1; a < argc; ++a) {
    const std::filesystem::path p(argv[a]);
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) Run(ReadFile(e.path())), ++runs;
      }
    } else {
      Run(ReadFile(p));
      ++runs;
    }
  }
  std::printf("replayed %zu inputs from %zu seeds\n", runs, seeds.size());
  return seeds.empty() ? 1 : 0;
}
