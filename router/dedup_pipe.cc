#include "router/dedup_pipe.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace rsd::router {

absl::StatusOr<bool> DedupPipe::Next(v1::StateChunk* chunk) {
  for (;;) {
    absl::StatusOr<bool> more = source_(chunk);
    if (!more.ok() || !*more) return more;
    if (chunk->has_header()) {
      in_.AddHeader(chunk->header());
      session_ = chunk->header().ref().session_id().substr(0, 32);
      // Only a stream that leaves nothing out already; never past its chunks.
      if (chunk->header().shared_chunks() == 0) {
        shared_ = std::clamp(held_(chunk->header()), 0, chunk->header().n_chunks());
        chunk->mutable_header()->set_shared_chunks(shared_);
      }
      out_.AddHeader(chunk->header());
      return true;
    }
    if (chunk->has_block()) {
      in_.AddBlock(chunk->block());
      if (chunk->block().chunk() < static_cast<uint32_t>(shared_)) continue;  // the target has it
      out_.AddBlock(chunk->block());
      return true;
    }
    if (chunk->has_trailer()) {
      if (chunk->trailer().blocks() != in_.blocks() || chunk->trailer().digest() != in_.value()) {
        return absl::DataLossError(absl::StrCat("the state stream of session ", session_,
                                                " fails its digest on the way through the router (",
                                                in_.blocks(), " blocks received, ",
                                                chunk->trailer().blocks(), " sent)"));
      }
      chunk->mutable_trailer()->set_blocks(out_.blocks());
      chunk->mutable_trailer()->set_digest(out_.value());
    }
    return true;
  }
}

}  // namespace rsd::router
