// Prefix sharing between sequences (issue #15): a chunk's state is a pure function of the tokens
// from the start of the sequence through it, so one sequence may start from another's hot blocks
// (shared, reference-counted, copied on a write) or checkpoints (aliased in the tiers), and a
// session that arrives from another worker may take the chunks this worker already holds from a
// local sequence instead of the wire. Split from engine.cc by concern.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/engine/engine.h"

namespace rsd {

absl::Status Engine::CheckPrefixOf(const Sequence& donor, std::span<const int32_t> tokens,
                                   int32_t n_chunks) const {
  const int64_t bt = model_->block_tokens();
  if (n_chunks <= 0 || n_chunks > FullChunks(donor.id) ||
      static_cast<int64_t>(tokens.size()) != n_chunks * bt ||
      !std::equal(tokens.begin(), tokens.end(), donor.tokens.begin())) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", donor.id.ToHex(), " does not hold ",
                                                   n_chunks, " whole chunks of these tokens"));
  }
  for (int32_t c = 0; c < n_chunks; ++c) {
    const bool hot = donor.resident && donor.blocks[c] >= 0;
    // Resident: its blocks are shared, so they must be in the pool; else its checkpoints are.
    if (donor.resident ? !hot : donor.blocks[c] != kEvicted) {
      return absl::FailedPreconditionError(
          absl::StrCat("chunk ", c, " of sequence ", donor.id.ToHex(), " is not ",
                       donor.resident ? "in the pool" : "checkpointed"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Engine::AliasCheckpoints(const Sequence& donor, const SessionId& id,
                                                 int32_t n_chunks, bool residual_only) {
  int64_t copied = 0;
  for (int32_t c = 0; c < n_chunks; ++c) {
    for (int l = 0; l < config().n_layers; ++l) {
      if (!donor.plan.kv(l) && l == 0) continue;  // layer 0's residual is the token embedding
      if (residual_only && donor.plan.kv(l)) continue;
      const auto at = [&](const SessionId& who) {
        return BlockKey{who, static_cast<uint32_t>(l), static_cast<uint32_t>(c)};
      };
      // Shared in host memory where the donor's checkpoint is there (no bytes copied).
      RSD_ASSIGN_OR_RETURN(const size_t bytes, tiers_->Alias(at(donor.id), at(id)));
      copied += static_cast<int64_t>(bytes);
    }
  }
  return copied;
}

absl::StatusOr<int64_t> Engine::SharePrefixOf(const SessionId& id, const SessionId& donor,
                                              std::span<const int32_t> tokens, int32_t n_chunks) {
  if (!eviction_->exact()) {
    return absl::FailedPreconditionError("a lossy eviction policy shares no blocks");
  }
  const Sequence& d = Seq(donor);
  if (!d.resident) return absl::FailedPreconditionError("the donor is not in the pool");
  RSD_RETURN_IF_ERROR(CheckPrefixOf(d, tokens, n_chunks));
  RSD_RETURN_IF_ERROR(CreateSequence(id));
  int64_t bytes = 0;
  absl::Status st = [&]() -> absl::Status {
    Sequence& s = Seq(id);
    s.plan = d.plan;
    if (CapturesResiduals(d)) {
      RSD_ASSIGN_OR_RETURN(bytes, AliasCheckpoints(d, id, n_chunks, /*residual_only=*/true));
    }
    s.tokens.assign(tokens.begin(), tokens.end());
    s.cached = static_cast<int64_t>(n_chunks) * model_->block_tokens();
    for (int32_t c = 0; c < n_chunks; ++c) {
      pool_->Retain(d.blocks[c]);
      s.blocks.push_back(d.blocks[c]);
    }
    s.peak_hot = HotBlocks(s);
    // A bounded sequence keeps its budget: the oldest shared chunks leave as its own checkpoints.
    return bounded() ? EnforceBudget(s, 1) : absl::OkStatus();
  }();
  if (!st.ok()) {
    DestroySequence(id);
    return st;
  }
  return bytes;
}

absl::StatusOr<int64_t> Engine::AdoptCheckpointsOf(const SessionId& id, const SessionId& donor,
                                                   std::span<const int32_t> tokens,
                                                   int32_t n_chunks) {
  const Sequence& d = Seq(donor);
  if (d.resident) return absl::FailedPreconditionError("the donor is in the pool: share it");
  RSD_RETURN_IF_ERROR(CheckPrefixOf(d, tokens, n_chunks));
  int64_t bytes = 0;
  absl::Status st = [&]() -> absl::Status {
    RSD_ASSIGN_OR_RETURN(bytes, AliasCheckpoints(d, id, n_chunks, /*residual_only=*/false));
    return AdoptSequence(id, tokens, n_chunks, d.plan);
  }();
  if (!st.ok()) {
    DestroySequence(id);  // if AdoptSequence created it
    tiers_->EvictSession(id).IgnoreError();
    return st;
  }
  return bytes;
}

Engine::PrefixCopy Engine::PrefixCopyOf(const Sequence& d, bool hot, int layer, bool kv) const {
  // The donor's own checkpoint where it has one in this form: K/V of a chunk not in the pool,
  // residuals it captured (or of a chunk not in the pool)...
  if (d.plan.kv(layer) == kv && (kv ? !hot : !hot || CapturesResiduals(d))) {
    return PrefixCopy::kAlias;
  }
  // ...else K/V from its hot block; a residual it did not keep cannot be had.
  return kv && hot ? PrefixCopy::kPayload : PrefixCopy::kNone;
}

bool Engine::GivesPrefixIn(const SessionId& donor, const LayerPlan& plan) const {
  if (plan.size() != config().n_layers || !HasSequence(donor)) return false;
  const Sequence& d = Seq(donor);
  for (int l = 0; l < config().n_layers; ++l) {
    if (!plan.kv(l) && l == 0) continue;
    if (PrefixCopyOf(d, d.resident, l, plan.kv(l)) == PrefixCopy::kNone) return false;
  }
  return true;
}

absl::StatusOr<int64_t> Engine::CopyPrefixCheckpoints(const SessionId& id, const SessionId& donor,
                                                      std::span<const int32_t> tokens,
                                                      int32_t n_chunks, const LayerPlan& plan) {
  if (plan.size() != config().n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer plan has ", plan.size(), " layers, the model ", config().n_layers));
  }
  if (HasSequence(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id.ToHex(), " exists"));
  }
  const Sequence& d = Seq(donor);
  RSD_RETURN_IF_ERROR(CheckPrefixOf(d, tokens, n_chunks));
  int64_t copied = 0;
  absl::Status st = [&]() -> absl::Status {
    for (int32_t c = 0; c < n_chunks; ++c) {
      const bool hot = d.resident && d.blocks[c] >= 0;
      for (int l = 0; l < config().n_layers; ++l) {
        const bool kv = plan.kv(l);
        if (!kv && l == 0) continue;  // layer 0's residual is the token embedding
        const BlockKey to{id, static_cast<uint32_t>(l), static_cast<uint32_t>(c)};
        const PrefixCopy how = PrefixCopyOf(d, hot, l, kv);
        if (how == PrefixCopy::kNone) {
          return absl::FailedPreconditionError(absl::StrCat(
              "sequence ", d.id.ToHex(), " keeps no ", kv ? "K/V" : "residual", " copy of layer ",
              l, " of its ", hot ? "hot" : "checkpointed", " chunks"));
        }
        if (how == PrefixCopy::kAlias) {
          const BlockKey from{d.id, static_cast<uint32_t>(l), static_cast<uint32_t>(c)};
          RSD_ASSIGN_OR_RETURN(const size_t bytes, tiers_->Alias(from, to));
          copied += static_cast<int64_t>(bytes);
          continue;
        }
        RSD_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, ChunkPayload(d.id, c, l, kv));
        RSD_RETURN_IF_ERROR(OffloadCheckpoint(id, c, l, plan.form(l), payload));
        copied += static_cast<int64_t>(payload.size());
      }
    }
    return absl::OkStatus();
  }();
  if (!st.ok()) {
    tiers_->EvictSession(id).IgnoreError();
    return st;
  }
  return copied;
}

absl::Status Engine::Unshare(Sequence& s, int32_t chunk) {
  const int32_t old = s.blocks[chunk];
  if (old < 0 || pool_->refs(old) == 1) return absl::OkStatus();
  RSD_ASSIGN_OR_RETURN(int32_t copy, pool_->Allocate());
  absl::Status st = backend_->CopyOnDevice(pool_->view().K(copy, 0), pool_->view().K(old, 0),
                                           pool_->block_bytes());
  if (!st.ok()) {
    pool_->Free(copy);
    return st;
  }
  pool_->Free(old);  // the others keep it
  s.blocks[chunk] = copy;
  return absl::OkStatus();
}

}  // namespace rsd
