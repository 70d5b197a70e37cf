#include "proto/state_stream.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"
#include "storage/prefix_keys.h"

namespace rsd {
namespace {

uint64_t Chain(uint64_t h, const std::string& bytes) {
  std::string buf(sizeof(h), '\0');
  std::memcpy(buf.data(), &h, sizeof(h));
  buf += bytes;
  return Hash64(buf);
}

absl::StatusOr<SessionState> StateOfHeader(const v1::StateHeader& h) {
  SessionState s;
  RSD_ASSIGN_OR_RETURN(s.id, ParseSessionId(h.ref().session_id()));
  RSD_ASSIGN_OR_RETURN(s.form, ParseSpillForm(h.form()));
  const std::string& letters = h.layer_forms();
  RSD_ASSIGN_OR_RETURN(s.plan, LayerPlan::Parse(letters, static_cast<int>(letters.size())));
  s.version = h.version();
  s.attrs.tenant = h.ref().tenant().empty() ? "default" : h.ref().tenant();
  s.attrs.epoch = h.ref().epoch();
  s.attrs.ttl_seconds = h.options().ttl_seconds();
  s.attrs.pin = h.options().pin();
  s.attrs.priority = h.options().priority();
  s.model_fingerprint = h.model_fingerprint();
  s.numerics_fingerprint = h.numerics_fingerprint();
  s.block_tokens = h.block_tokens();
  s.n_chunks = h.n_chunks();
  s.shared_chunks = h.shared_chunks();
  s.tokens.assign(h.tokens().begin(), h.tokens().end());
  s.turn_ends.assign(h.turn_ends().begin(), h.turn_ends().end());
  return s;
}

}  // namespace

void StateDigest::AddHeader(const v1::StateHeader& header) {
  std::string bytes;
  header.SerializeToString(&bytes);
  h_ = Chain(h_, bytes);
}

void StateDigest::AddBlock(const v1::StateBlock& block) {
  std::string bytes(8, '\0');
  const uint32_t lc[2] = {block.layer(), block.chunk()};
  std::memcpy(bytes.data(), lc, sizeof(lc));
  bytes += block.value();
  h_ = Chain(h_, bytes);
  blocks_++;
}

v1::StateHeader StateHeaderOf(const SessionState& state, uint64_t epoch) {
  v1::StateHeader h;
  h.set_version(state.version);
  h.mutable_ref()->set_session_id(state.id.ToHex());
  h.mutable_ref()->set_tenant(state.attrs.tenant);
  h.mutable_ref()->set_epoch(epoch);
  h.mutable_options()->set_ttl_seconds(state.attrs.ttl_seconds);
  h.mutable_options()->set_pin(state.attrs.pin);
  h.mutable_options()->set_priority(state.attrs.priority);
  h.set_model_fingerprint(state.model_fingerprint);
  h.set_numerics_fingerprint(state.numerics_fingerprint);
  h.set_form(SpillFormName(state.form));
  h.set_layer_forms(state.plan.ToString());
  h.set_block_tokens(state.block_tokens);
  h.set_n_chunks(state.n_chunks);
  h.set_shared_chunks(state.shared_chunks);
  h.mutable_tokens()->Add(state.tokens.begin(), state.tokens.end());
  h.mutable_turn_ends()->Add(state.turn_ends.begin(), state.turn_ends.end());
  return h;
}

std::optional<v1::HeldPrefixRequest> HeldPrefixOffer(const v1::StateHeader& h) {
  if (h.form() == "tokens" || h.n_chunks() <= h.shared_chunks() || h.block_tokens() <= 0) {
    return std::nullopt;
  }
  v1::HeldPrefixRequest req;
  const std::string tenant = h.ref().tenant().empty() ? "default" : h.ref().tenant();
  req.set_tenant(tenant);
  req.set_session_id(h.ref().session_id());
  req.set_layer_forms(h.layer_forms());
  const std::vector<int32_t> tokens(h.tokens().begin(), h.tokens().end());
  const std::string root =
      ChainRoot(h.model_fingerprint(), h.numerics_fingerprint(), h.block_tokens(), tenant);
  for (std::string& key : ChunkKeys(root, tokens, h.block_tokens(), h.n_chunks())) {
    req.add_keys(std::move(key));
  }
  return req;
}

absl::Status WriteStateStream(SessionState state, uint64_t epoch,
                              const std::function<bool(const v1::StateChunk&)>& write) {
  const absl::Status left = absl::CancelledError("the importer left");
  StateDigest digest;
  v1::StateChunk chunk;
  *chunk.mutable_header() = StateHeaderOf(state, epoch);
  digest.AddHeader(chunk.header());
  if (!write(chunk)) return left;
  for (SessionState::Block& b : state.blocks) {
    v1::StateBlock* block = chunk.mutable_block();
    block->set_layer(b.layer);
    block->set_chunk(b.chunk);
    block->set_value(std::move(b.value));
    digest.AddBlock(*block);
    if (!write(chunk)) return left;
  }
  chunk.mutable_trailer()->set_blocks(digest.blocks());
  chunk.mutable_trailer()->set_digest(digest.value());
  if (!write(chunk)) return left;
  return absl::OkStatus();
}

absl::Status StateStreamReader::Add(v1::StateChunk chunk) {
  wire_ += static_cast<int64_t>(chunk.ByteSizeLong());
  if (trailer_) return absl::InvalidArgumentError("messages after the trailer");
  if (!header_) {
    if (!chunk.has_header()) {
      return absl::InvalidArgumentError("a state stream starts with its header");
    }
    RSD_RETURN_IF_ERROR(CheckHeader(chunk.header()));
    RSD_ASSIGN_OR_RETURN(state_, StateOfHeader(chunk.header()));
    max_blocks_ = int64_t{chunk.header().n_chunks() - chunk.header().shared_chunks()} *
                  static_cast<int64_t>(chunk.header().layer_forms().size());
    digest_.AddHeader(chunk.header());
    header_ = true;
    return absl::OkStatus();
  }
  if (chunk.has_block()) {
    if (digest_.blocks() >= max_blocks_) {
      return absl::InvalidArgumentError(
          absl::StrCat("the state stream of session ", state_.id.ToHex(), " has more blocks than ",
                       "its header's chunks and layers hold (", max_blocks_, ")"));
    }
    if (static_cast<int64_t>(chunk.block().value().size()) > limits_.max_block_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the state stream of session ", state_.id.ToHex(), " has a block of ",
          chunk.block().value().size(), " bytes; at most ", limits_.max_block_bytes, " fit here"));
    }
    digest_.AddBlock(chunk.block());
    state_.blocks.push_back({chunk.block().layer(), chunk.block().chunk(),
                             std::move(*chunk.mutable_block()->mutable_value())});
    return absl::OkStatus();
  }
  if (!chunk.has_trailer()) {
    return absl::InvalidArgumentError("a second header in the state stream");
  }
  trailer_ = true;
  if (chunk.trailer().blocks() != digest_.blocks() || chunk.trailer().digest() != digest_.value()) {
    return absl::DataLossError(
        absl::StrCat("the state stream of session ", state_.id.ToHex(), " fails its digest (",
                     digest_.blocks(), " blocks received, ", chunk.trailer().blocks(), " sent)"));
  }
  return absl::OkStatus();
}

absl::Status StateStreamReader::CheckHeader(const v1::StateHeader& h) const {
  const int64_t tokens = h.tokens_size();
  const std::string what =
      absl::StrCat("the state stream of session ", h.ref().session_id().substr(0, 32), ": ");
  if (tokens > limits_.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(what, "a token log of ", tokens,
                                                   " tokens is longer than the context here (",
                                                   limits_.max_tokens, ")"));
  }
  if (h.turn_ends_size() > tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, h.turn_ends_size(), " turns in a log of ", tokens, " tokens"));
  }
  if (h.n_chunks() < 0 || (h.n_chunks() > 0 && h.block_tokens() <= 0) ||
      int64_t{h.n_chunks()} * std::max(h.block_tokens(), 0) > tokens) {
    return absl::InvalidArgumentError(absl::StrCat(what, h.n_chunks(), " chunks of ",
                                                   h.block_tokens(), " tokens do not fit a log of ",
                                                   tokens, " tokens"));
  }
  if (h.shared_chunks() < 0 || h.shared_chunks() > h.n_chunks()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, h.shared_chunks(), " shared chunks of ", h.n_chunks(), " chunks"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionState> StateStreamReader::Finish() {
  if (!header_) return absl::InvalidArgumentError("a state stream starts with its header");
  if (!trailer_) {
    return absl::DataLossError(absl::StrCat("the state stream of session ", state_.id.ToHex(),
                                            " ended after ", state_.blocks.size(),
                                            " blocks without its trailer (truncated)"));
  }
  return std::move(state_);
}

}  // namespace rsd
