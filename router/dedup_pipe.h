// A state stream piped through the router (a migration whose source cannot reach its target) with
// the leading chunks the target already holds left out (deduplicated migration, issue #15): the
// header gains shared_chunks, those chunks' blocks are dropped, and the trailer is rewritten over
// what is forwarded, once the source's own digest has checked out. The target finds the chunks by
// comparing tokens (SessionManager::ImportState); if it no longer holds them it refuses with
// ABORTED and the router pipes the session again, whole.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "proto/state_stream.h"
#include "rsd/v1/worker.pb.h"

namespace rsd::router {

class DedupPipe {
 public:
  // Reads the next message of the source's stream into its argument: true, false at its end, or
  // the source's error.
  using Source = std::function<absl::StatusOr<bool>(v1::StateChunk*)>;
  // How many leading chunks the target holds for a header (0: none, or it cannot say).
  using Held = std::function<int32_t(const v1::StateHeader&)>;
  DedupPipe(Source source, Held held) : source_(std::move(source)), held_(std::move(held)) {}

  // The next message to forward, as Source. DATA_LOSS naming the session if the source's trailer
  // does not match what it sent (the target would refuse that stream too).
  absl::StatusOr<bool> Next(v1::StateChunk* chunk);
  int32_t shared_chunks() const { return shared_; }

 private:
  Source source_;
  Held held_;
  int32_t shared_ = 0;
  std::string session_;
  StateDigest in_, out_;  // over what the source sent; over what is forwarded
};

}  // namespace rsd::router
