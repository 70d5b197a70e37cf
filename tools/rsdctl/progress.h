// Progress of a long admin call (drain, failover, migrate) on a terminal: while the call blocks,
// a line on stderr is redrawn every quarter second from a sampler polled about once a second.
// Nothing is drawn when stderr is not a terminal or the output is structured (-o json|yaml).
#pragma once

#include <functional>
#include <string>

#include "tools/rsdctl/cli.h"

namespace rsd::ctl {

// What a sample says: sessions and state bytes still to move (-1: unknown).
struct MoveSample {
  int64_t sessions_left = -1;
  int64_t bytes_left = -1;
};

// Runs `call` (the blocking RPC) while drawing "<what>: moved a/b sessions, x/y B, r B/s, ETA t s"
// from `sample` (the first sample is the starting point). Returns call()'s status.
grpc::Status WithProgress(const Cli& cli, const std::string& what,
                          const std::function<MoveSample()>& sample,
                          const std::function<grpc::Status()>& call);

// The sample for moving every session off `worker`: its sessions and their state bytes, from
// Admin.ListSessions.
MoveSample SessionsOn(const Cli& cli, const std::string& worker);

}  // namespace rsd::ctl
