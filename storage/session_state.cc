#include "storage/session_state.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"

namespace rsd {
namespace {

absl::Status CheckLog(const SessionState& state, int32_t vocab, int64_t max_tokens) {
  const int64_t n = static_cast<int64_t>(state.tokens.size());
  if (max_tokens > 0 && n > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("session state: a token log of ", n,
                                                   " tokens is longer than the context here (",
                                                   max_tokens, ")"));
  }
  // Every turn appends at least one token (its template's), so turn ends strictly ascend.
  int64_t end = 0;
  for (size_t t = 0; t < state.turn_ends.size(); ++t) {
    const int64_t e = state.turn_ends[t];
    if (e <= end || e > n) {
      return absl::InvalidArgumentError(absl::StrCat("session state: turn ", t, " ends at ", e,
                                                     ", not after the previous turn's end ", end,
                                                     " within the log of ", n, " tokens"));
    }
    end = e;
  }
  if (end != static_cast<int64_t>(state.tokens.size())) {
    return absl::InvalidArgumentError("session state: the token log does not end at a turn end");
  }
  for (size_t i = 0; i < state.tokens.size(); ++i) {
    if (state.tokens[i] < 0 || state.tokens[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("session state: token ", i, " of the log is ",
                                                     state.tokens[i],
                                                     ", outside the vocabulary of ", vocab));
    }
  }
  return absl::OkStatus();
}

// Every block present exactly once, checksummed, describing its place in `plan`'s form.
absl::Status CheckBlocks(const SessionState& state, const StateLayout& here, const LayerPlan& plan,
                         ImportReport* report) {
  std::map<std::pair<uint32_t, uint32_t>, const SessionState::Block*> seen;
  for (const SessionState::Block& b : state.blocks) {
    absl::StatusOr<BlockInfo> info = InspectBlock(b.value);
    if (!info.ok()) {
      return absl::DataLossError(absl::StrCat("block of layer ", b.layer, " chunk ", b.chunk, ": ",
                                              info.status().message()));
    }
    const bool in_model = b.layer < static_cast<uint32_t>(here.n_layers);
    const bool shared = b.chunk < static_cast<uint32_t>(state.shared_chunks);
    if (!in_model || shared ||
        !(info->header == CheckpointHeaderFor(here, plan.form(static_cast<int>(b.layer)),
                                              static_cast<int>(b.layer),
                                              static_cast<int32_t>(b.chunk))) ||
        !seen.emplace(std::make_pair(b.layer, b.chunk), &b).second) {
      return absl::DataLossError(absl::StrCat("block of layer ", b.layer, " chunk ", b.chunk,
                                              shared
                                                  ? " lies in the shared chunks the importer holds"
                                                  : " does not describe that place (or repeats)"));
    }
    report->blocks++;
    report->payload_bytes += static_cast<int64_t>(info->payload_size);
    report->framing_bytes += static_cast<int64_t>(b.value.size() - info->payload_size);
  }
  for (int32_t c = state.shared_chunks; c < state.n_chunks; ++c) {
    for (int l = 0; l < here.n_layers; ++l) {
      if (!plan.kv(l) && l == 0) continue;  // layer 0's residual is the token embedding
      if (!seen.count({static_cast<uint32_t>(l), static_cast<uint32_t>(c)})) {
        return absl::DataLossError(
            absl::StrCat("session state lacks the block of layer ", l, " chunk ", c));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

CheckpointHeader CheckpointHeaderFor(const StateLayout& layout, StateForm form, int layer,
                                     int32_t chunk) {
  CheckpointHeader h;
  h.form = form;
  h.dtype = form == StateForm::kKv ? ElementType::kF16 : ElementType::kF32;  // the hot pool's F16
  h.layer = static_cast<uint32_t>(layer);
  h.first_position = static_cast<uint32_t>(chunk * layout.block_tokens);
  h.n_tokens = static_cast<uint32_t>(layout.block_tokens);
  h.row_elements = static_cast<uint32_t>(form == StateForm::kKv ? layout.kv_dim : layout.d_model);
  h.model_fingerprint = layout.model_fingerprint;
  h.numerics_fingerprint = layout.numerics_fingerprint;
  return h;
}

absl::StatusOr<CheckedState> CheckSessionState(const SessionState& state, const StateLayout& here) {
  if (state.version != SessionState::kVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat("session state version ", state.version, " is not ", SessionState::kVersion));
  }
  if (state.model_fingerprint != here.model_fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", state.id.ToHex(), " was built with model ",
                     state.model_fingerprint, "; this worker runs ", here.model_fingerprint));
  }
  RSD_RETURN_IF_ERROR(CheckLog(state, here.vocab_size, here.max_tokens));
  CheckedState out;
  out.plan = here.plan;
  out.use_blocks =
      state.form != SpillForm::kTokens && state.form != SpillForm::kNone && state.n_chunks > 0;
  if (out.use_blocks && (state.numerics_fingerprint != here.numerics_fingerprint ||
                         state.block_tokens != here.block_tokens)) {
    out.use_blocks = false;
    out.report.note =
        absl::StrCat("numerics fingerprint ", state.numerics_fingerprint, " / block size ",
                     state.block_tokens, " differ from this worker's ", here.numerics_fingerprint,
                     " / ", here.block_tokens, ": the session rebuilds from its token log");
  }
  if (out.use_blocks) {
    if (state.plan.size() != here.n_layers || state.n_chunks < 0 || state.shared_chunks < 0 ||
        state.shared_chunks > state.n_chunks ||
        static_cast<int64_t>(state.n_chunks) * here.block_tokens >
            static_cast<int64_t>(state.tokens.size())) {
      return absl::InvalidArgumentError(
          "session state: layer forms or chunk count do not fit the model");
    }
    out.plan = state.plan;
    RSD_RETURN_IF_ERROR(CheckBlocks(state, here, out.plan, &out.report));
  }
  out.report.form = out.use_blocks ? state.form : SpillForm::kTokens;
  return out;
}

}  // namespace rsd
