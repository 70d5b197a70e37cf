// The serving benchmark's clients (rsd-serving-bench): one chat session against one system -
// our router over gRPC, a worker's own Worker service directly (what the router hop costs), or an
// OpenAI-style HTTP server (llama-server, or our router's front door with server-side sessions).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace rsd::bench {

using Clock = std::chrono::steady_clock;

// One turn as the client saw it.
struct TurnTrace {
  Clock::time_point sent;
  std::vector<std::pair<Clock::time_point, int>> events;  // arrival, tokens carried
  int64_t tokens = 0;                                     // generated tokens (server's count)
  std::string finish;
  std::string error;
};

// A chat session against one system; one per client thread, used by that thread only.
class ChatClient {
 public:
  virtual ~ChatClient() = default;
  virtual std::string Open() = 0;  // "" or an error
  virtual TurnTrace Turn(const std::string& message, int max_tokens) = 0;
};

// What every turn asks for: greedy (temperature 0) or sampled with a fixed seed and `top_p` and no
// other cut, the same on every system.
struct Sampling {
  double temperature = 0;
  double top_p = 1;
};

// system: "rsd" (router host:port), "rsd-worker" (a worker's host:port: its Worker service, no
// router), "rsd-http" (router's HTTP port), "llama" (llama-server). Null for another name.
std::unique_ptr<ChatClient> MakeClient(const std::string& system, const std::string& target,
                                       double timeout, Sampling sampling);

}  // namespace rsd::bench
