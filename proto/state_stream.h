// One codec for a session's state on the wire (proto rsd.v1.StateChunk), used by the worker
// (export, import, sending to another worker) and the router (token-only streams for failover,
// piping): SessionState (storage/session_state.h) ⇄ a header message, one message per checkpoint
// block, and a trailer carrying a digest chained over the header and every block in stream order,
// so that a truncated, reordered or altered stream is refused.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "rsd/v1/worker.pb.h"
#include "storage/session_state.h"

namespace rsd {

class StateDigest {
 public:
  void AddHeader(const v1::StateHeader& header);
  void AddBlock(const v1::StateBlock& block);
  uint64_t value() const { return h_; }
  int64_t blocks() const { return blocks_; }

 private:
  uint64_t h_ = 0x5253445354415445ull;  // "RSDSTATE"
  int64_t blocks_ = 0;
};

// The header message of `state`'s stream; `epoch` is the new owner's (the router sets it).
v1::StateHeader StateHeaderOf(const SessionState& state, uint64_t epoch);

// Deduplicated migration (issue #15): the offer a sender makes the target before streaming a state
// with this header (Worker.HeldPrefix): the tenant, the session, the blocks' layer forms and the
// chain key of each whole chunk its blocks cover (storage/prefix_keys.h). nullopt for a stream
// without blocks to leave out.
std::optional<v1::HeldPrefixRequest> HeldPrefixOffer(const v1::StateHeader& header);

// Hands `state`'s stream to `write` message by message: the header (with `epoch`), each block
// (moved out of `state`), the trailer. CANCELLED "the importer left" once `write` returns false.
absl::Status WriteStateStream(SessionState state, uint64_t epoch,
                              const std::function<bool(const v1::StateChunk&)>& write);

// What an importer accepts before it has buffered a stream (issue #13): checked message by
// message, so that a hostile or broken stream is refused at its header or at the first block
// past a bound, not after it has been read whole.
struct StateStreamLimits {
  int64_t max_tokens = INT64_MAX;       // the token log (the importer's context)
  int64_t max_block_bytes = INT64_MAX;  // one block's encoded value
};

// Rebuilds a state from its stream, message by message.
class StateStreamReader {
 public:
  explicit StateStreamReader(StateStreamLimits limits = {}) : limits_(limits) {}

  // INVALID_ARGUMENT for a stream that does not start with its header, a second header, a message
  // after the trailer, or a header that does not parse (session id, form, layer forms); for a
  // header whose token log is over limits.max_tokens, has more turns than tokens or a negative
  // chunk count, or whose chunks do not fit its log (or its shared chunks its chunks); for more
  // blocks than the header's chunks (past the shared ones) and layers hold, or a block over
  // limits.max_block_bytes (each naming the numbers); DATA_LOSS naming the session when the
  // trailer's count or digest does not match what arrived.
  absl::Status Add(v1::StateChunk chunk);
  // The state once the trailer has arrived; DATA_LOSS naming the session if it has not.
  absl::StatusOr<SessionState> Finish();
  // Every message as serialized, so far.
  int64_t wire_bytes() const { return wire_; }

 private:
  absl::Status CheckHeader(const v1::StateHeader& h) const;

  StateStreamLimits limits_;
  int64_t max_blocks_ = 0;  // what the header's chunks and layers hold
  bool header_ = false, trailer_ = false;
  SessionState state_;
  StateDigest digest_;
  int64_t wire_ = 0;
};

}  // namespace rsd
