// The state stream's integrity check (proto rsd.v1.StateChunk): a digest chained over the header
// and every block, in stream order, which the last message (StateTrailer) carries. Shared by the
// worker (export, import) and the router (which writes token-only streams for failover).
#pragma once

#include <cstdint>

#include "rsd/v1/worker.pb.h"

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

}  // namespace rsd
