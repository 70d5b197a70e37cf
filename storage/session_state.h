// A session's exact state in transit between workers (migration, drain, failover), and the pure
// check a worker runs before taking one. Transport-neutral: proto/state_stream carries it over
// gRPC as a header, one message per block and a digest trailer; another transport only has to
// carry these fields.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/common/ids.h"
#include "storage/common/state_form.h"
#include "storage/state_codec.h"

namespace rsd {

// What a serving layer attaches to a session; persisted with its metadata and moved with it.
struct SessionAttrs {
  std::string tenant = "default";
  uint64_t epoch = 0;        // ownership epoch (fencing between workers)
  uint32_t ttl_seconds = 0;  // idle this long: spilled to cold; twice this long: deleted (0: never)
  bool pin = false;          // spilled only when no unpinned idle session can make room
  int32_t priority = 0;      // higher: spilled later
};

// The token log with its turn boundaries and, unless the form is kTokens, the checkpoint blocks of
// its first `n_chunks` chunks as the state codec encodes them (each self-describing and
// checksummed), each layer in `plan`'s form.
struct SessionState {
  static constexpr uint32_t kVersion = 1;
  uint32_t version = kVersion;
  SessionId id;
  SessionAttrs attrs;
  std::string model_fingerprint, numerics_fingerprint;
  SpillForm form = SpillForm::kTokens;  // how the blocks were asked for (kTokens: no blocks)
  LayerPlan plan;                       // per layer, the form of its blocks (empty: no blocks)
  int32_t block_tokens = 0;
  int32_t n_chunks = 0;         // chunks covered by the blocks
  // Of those, the leading chunks whose blocks are not carried: the importer holds their state
  // already (another session with the same leading tokens; deduplicated migration, issue #15).
  int32_t shared_chunks = 0;
  std::vector<int32_t> tokens;  // the committed token log
  std::vector<int64_t> turn_ends;
  struct Block {
    uint32_t layer = 0, chunk = 0;
    std::string value;  // EncodeBlock output
  };
  std::vector<Block> blocks;
};

// What a worker is, as far as a session's state is concerned.
struct StateLayout {
  std::string model_fingerprint, numerics_fingerprint;
  int32_t block_tokens = 0;
  int n_layers = 0;
  int32_t vocab_size = 0;
  int64_t kv_dim = 0;   // K/V row elements of one layer
  int64_t d_model = 0;  // residual row elements
  LayerPlan plan;       // the worker's own per-layer plan (a session rebuilt from tokens gets it)
  int64_t max_tokens = 0;  // the context: the longest token log accepted (0: unbounded)
};

// The header the checkpoint block of `layer` of `chunk` in `form` carries: K/V rows in F16 (the
// hot pool's bytes), residual rows in F32.
CheckpointHeader CheckpointHeaderFor(const StateLayout& layout, StateForm form, int layer,
                                     int32_t chunk);

// What an import does with a state.
struct ImportReport {
  SpillForm form = SpillForm::kTokens;  // the form the session will restore from
  std::string note;                     // e.g. why the blocks were not used
  int64_t blocks = 0, payload_bytes = 0, framing_bytes = 0;
  // Leading tokens whose state the importer took from a session it holds instead of the stream
  // (deduplicated migration and failover, issue #15).
  int64_t shared_tokens = 0;
};

struct CheckedState {
  bool use_blocks = false;
  LayerPlan plan;  // the blocks' forms, or the layout's plan when they are not used
  ImportReport report;
};

// Checks a state against the worker that would take it, without touching anything: FAILED_-
// PRECONDITION for another version or model fingerprint; INVALID_ARGUMENT for turn ends that are
// not ascending or do not end the log, a token outside the vocabulary, or layer forms or a chunk
// count that do not fit the model (shared chunks past the chunks included); DATA_LOSS naming the
// block for one that fails its checksum, does not describe its place, repeats, lies in the shared
// chunks, or is missing. With another numerics fingerprint or block
// size the blocks are not used (the session rebuilds from its token log; the report's note says
// why).
absl::StatusOr<CheckedState> CheckSessionState(const SessionState& state, const StateLayout& here);

}  // namespace rsd
