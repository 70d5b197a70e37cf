// The engine's session state between the hot pool and the tiers: budgets, eviction to
// checkpoints, residual capture, rebuild sources, spills, restores and truncation. Split from
// engine.cc by concern.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/common/status.h"
#include "worker/engine/engine.h"

namespace rsd {
namespace {

template <typename T>
std::span<const uint8_t> AsBytes(std::span<const T> v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

// A checkpoint payload's elements (the codec checked its size against the header's dtype).
template <typename T>
std::vector<T> Elements(std::span<const uint8_t> payload) {
  std::vector<T> out(payload.size() / sizeof(T));
  std::memcpy(out.data(), payload.data(), out.size() * sizeof(T));
  return out;
}

void InsertSorted(std::vector<int32_t>& v, int32_t x) {
  v.insert(std::upper_bound(v.begin(), v.end(), x), x);
}

}  // namespace

// ---- Bookkeeping ----

int32_t Engine::HotBlocks(const Sequence& s) const {
  int32_t n = 0;
  for (int32_t b : s.blocks) n += b >= 0;
  return n;
}

bool Engine::WritesIntoSharedBlock(const SessionId& id) const {
  const Sequence& s = Seq(id);
  const int64_t chunk = s.cached / model_->block_tokens();
  return chunk < static_cast<int64_t>(s.blocks.size()) && s.blocks[chunk] >= 0 &&
         pool_->refs(s.blocks[chunk]) > 1;
}

SequenceMemory Engine::SequenceMemoryUse(const SessionId& id) const {
  const Sequence& s = Seq(id);
  SequenceMemory m;
  m.hot_blocks = HotBlocks(s) + (s.scratch >= 0 ? 1 : 0);
  for (int32_t b : s.blocks) m.shared_blocks += b >= 0 && pool_->refs(b) > 1;
  m.peak_hot_blocks = s.peak_hot;
  m.evicted_blocks = static_cast<int32_t>(s.evicted.size());
  for (const auto& rows : s.partial) m.checkpoint_bytes += static_cast<int64_t>(rows.size() * 4);
  for (size_t l = 0; l < tiers_->depth(); ++l) {
    m.checkpoint_bytes += static_cast<int64_t>(tiers_->SessionBytes(id, l).value_or(0));
  }
  return m;
}

int64_t Engine::MaxStepTokens(const SessionId& id) const {
  const Sequence& s = Seq(id);
  const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
  if (!bounded()) return model_->max_context() - static_cast<int64_t>(s.tokens.size());
  const int64_t bt = model_->block_tokens();
  return static_cast<int64_t>(budget_blocks_) * bt - s.cached % bt - pending;
}

int64_t Engine::PendingTokens(const SessionId& id) const {
  const Sequence& s = Seq(id);
  return static_cast<int64_t>(s.tokens.size()) - s.cached;
}

int64_t Engine::MaxPendingFeed(const SessionId& id) const {
  const Sequence& s = Seq(id);
  const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
  if (!bounded()) return pending;
  const int64_t bt = model_->block_tokens();
  return std::min<int64_t>(pending, static_cast<int64_t>(budget_blocks_) * bt - s.cached % bt);
}

int32_t Engine::FullChunks(const SessionId& id) const {
  return static_cast<int32_t>(Seq(id).cached / model_->block_tokens());
}

void Engine::FreeBlocks(Sequence& s) {
  for (int32_t b : s.blocks) {
    if (b >= 0) pool_->Free(b);
  }
  s.blocks.clear();
  if (s.scratch >= 0) pool_->Free(s.scratch);
  s.scratch = -1;
}

// ---- Checkpoints in the tiers ----

absl::Status Engine::OffloadCheckpoint(const SessionId& id, int32_t chunk, int layer,
                                       StateForm form, std::span<const uint8_t> payload) {
  RSD_ASSIGN_OR_RETURN(
      std::string value,
      EncodeBlock(CheckpointHeaderFor(layout_, form, layer, chunk), payload, Compression::kNone));
  return tiers_->Offload(BlockKey{id, static_cast<uint32_t>(layer), static_cast<uint32_t>(chunk)},
                         std::move(value));
}

absl::StatusOr<std::vector<uint8_t>> Engine::Checkpoint(const Sequence& s, int32_t chunk, int layer,
                                                        const char** from) const {
  const StateForm form = s.plan.form(layer);
  RSD_ASSIGN_OR_RETURN(
      std::string value,
      tiers_->Onboard(BlockKey{s.id, static_cast<uint32_t>(layer), static_cast<uint32_t>(chunk)},
                      from));
  RSD_ASSIGN_OR_RETURN(DecodedBlock block, DecodeBlock(value));
  if (!(block.header == CheckpointHeaderFor(layout_, form, layer, chunk))) {
    return absl::DataLossError(absl::StrCat("checkpoint of chunk ", chunk, " layer ", layer,
                                            " does not describe that block"));
  }
  return std::move(block.payload);
}

absl::Status Engine::LoadChunk(const Sequence& s, int layer, int32_t chunk, ChunkState* out) const {
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  const bool kv = s.plan.kv(layer);
  if (!kv && layer == 0) {
    out->form = StateForm::kTokens;
    out->tokens.assign(s.tokens.begin() + chunk * bt, s.tokens.begin() + (chunk + 1) * bt);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<uint8_t>> got = Checkpoint(s, chunk, layer);
  if (!got.ok()) {
    return absl::DataLossError(absl::StrCat("no checkpoint for evicted chunk ", chunk, " layer ",
                                            layer, ": ", got.status().message()));
  }
  if (kv) {
    std::vector<KvElement> data = Elements<KvElement>(*got);
    out->form = StateForm::kKv;
    out->k.assign(data.begin(), data.begin() + bt * kvd);
    out->v.assign(data.begin() + bt * kvd, data.end());
  } else {
    out->form = StateForm::kResidual;
    out->h = Elements<float>(*got);
  }
  return absl::OkStatus();
}

// ---- Residual capture ----

bool Engine::CapturesResidualsFor(const LayerPlan& plan) const {
  return plan.HasResidualLayers() && (options_.keep_residuals || (bounded() && eviction_->exact()));
}

absl::Status Engine::CaptureResiduals(Sequence& s, int64_t first_pos, int64_t n,
                                      const ForwardResult& r, int64_t row0) {
  const int64_t bt = model_->block_tokens(), d = config().d_model, L = config().n_layers;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = first_pos + t;
    const int32_t chunk = static_cast<int32_t>(pos / bt);
    if (s.partial_chunk != chunk) {
      s.partial_chunk = chunk;
      s.partial.assign(static_cast<size_t>(L), {});
    }
    for (int64_t l = 1; l < L; ++l) {
      if (s.plan.kv(static_cast<int>(l))) continue;
      std::vector<float>& rows = s.partial[l];
      rows.resize(static_cast<size_t>(bt * d));
      const float* src = r.residuals.data() + (l * r.n_rows + row0 + t) * d;
      std::copy(src, src + d, rows.data() + (pos % bt) * d);
    }
    if (pos % bt == bt - 1) RSD_RETURN_IF_ERROR(OffloadPartial(s));
  }
  return absl::OkStatus();
}

absl::Status Engine::OffloadPartial(Sequence& s) {
  for (size_t l = 1; l < s.partial.size(); ++l) {
    if (s.partial[l].empty()) continue;
    RSD_RETURN_IF_ERROR(OffloadCheckpoint(s.id, s.partial_chunk, static_cast<int>(l),
                                          StateForm::kResidual,
                                          AsBytes(std::span<const float>(s.partial[l]))));
  }
  s.partial_chunk = -1;
  s.partial.clear();
  return absl::OkStatus();
}

// ---- Within a turn: the hot budget ----

absl::Status Engine::EvictChunk(Sequence& s, int32_t victim) {
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim(), L = config().n_layers;
  const int32_t block = s.blocks[victim];
  // The block's K/V layers leave through the staging ring on the transfer stream (after the
  // compute that wrote them) into the tiers; its residual layers are there already (captured).
  const size_t layer_bytes = static_cast<size_t>(2 * bt * kvd) * kKvElementBytes;
  int64_t kv_layers = 0;
  for (int64_t l = 0; l < L; ++l) kv_layers += s.plan.kv(static_cast<int>(l));
  if (kv_layers > 0) {
    RSD_ASSIGN_OR_RETURN(void* ring, staging_->Reserve(kv_layers * layer_bytes));
    uint8_t* at = static_cast<uint8_t*>(ring);
    for (int l = 0; l < L; ++l) {
      if (!s.plan.kv(l)) continue;
      RSD_RETURN_IF_ERROR(backend_->CopyToHostAsync(at, pool_->view().K(block, l), layer_bytes));
      at += layer_bytes;
    }
    RSD_RETURN_IF_ERROR(backend_->WaitTransfers());
    at = static_cast<uint8_t*>(ring);
    for (int l = 0; l < L; ++l) {
      if (!s.plan.kv(l)) continue;
      RSD_RETURN_IF_ERROR(OffloadCheckpoint(s.id, victim, l, StateForm::kKv,
                                            std::span<const uint8_t>(at, layer_bytes)));
      at += layer_bytes;
    }
  }
  if (options_.poison_freed_blocks && pool_->refs(block) == 1) {
    RSD_RETURN_IF_ERROR(pool_->Poison(block, 0xFF));
  }
  pool_->Free(block);
  s.blocks[victim] = kEvicted;
  InsertSorted(s.evicted, victim);
  if (s.scratch < 0) {
    RSD_ASSIGN_OR_RETURN(s.scratch, pool_->Allocate());
  }
  return absl::OkStatus();
}

absl::Status Engine::EnforceBudget(Sequence& s, int32_t incoming) {
  while (HotBlocks(s) + incoming > budget_blocks_) {
    const ChunkView chunks{s.blocks, static_cast<int32_t>(s.cached / model_->block_tokens())};
    const int32_t victim = eviction_->PickVictim(s.eviction, chunks);
    if (victim < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "hot budget of ", budget_blocks_, " blocks cannot hold this step"));
    }
    if (!eviction_->exact()) {
      // Lossy baseline: the block is gone; attention skips it from now on.
      pool_->Free(s.blocks[victim]);
      s.blocks[victim] = kDropped;
      InsertSorted(s.dropped, victim);
      continue;
    }
    RSD_RETURN_IF_ERROR(EvictChunk(s, victim));
  }
  return absl::OkStatus();
}

// ---- Rollback ----

absl::Status Engine::TruncateSequence(const SessionId& id, int64_t n) {
  Sequence& s = Seq(id);
  if (n >= static_cast<int64_t>(s.tokens.size())) return absl::OkStatus();
  const int64_t bt = model_->block_tokens();
  const int64_t keep_chunks = (n + bt - 1) / bt;
  const int32_t tail = static_cast<int32_t>(n / bt);  // the chunk that will hold the end
  if (n % bt != 0 && tail < static_cast<int32_t>(s.blocks.size()) && s.blocks[tail] == kDropped) {
    return absl::FailedPreconditionError("cannot roll back into a block a lossy policy dropped");
  }
  while (static_cast<int64_t>(s.blocks.size()) > keep_chunks) {
    if (s.blocks.back() >= 0) pool_->Free(s.blocks.back());
    s.blocks.pop_back();
  }
  std::erase_if(s.evicted, [&](int32_t c) { return c >= keep_chunks; });
  std::erase_if(s.dropped, [&](int32_t c) { return c >= keep_chunks; });
  eviction_->Truncate(s.eviction, static_cast<int32_t>(keep_chunks));
  // The chunk now holding the end of the history must be hot to take new tokens (a resident
  // sequence; one that is not is restored from its checkpoints later).
  if (s.resident && n % bt != 0 && tail < static_cast<int32_t>(s.blocks.size()) &&
      s.blocks[tail] == kEvicted) {
    RSD_RETURN_IF_ERROR(RestoreChunkToHot(s, tail));
  }
  if (n % bt != 0 && CapturesResiduals(s)) {
    // Its residual rows before `n` stay valid (the rest are rewritten when recomputed): a chunk
    // that was full comes back from the tiers to be captured into again.
    if (s.partial_chunk != tail && s.cached >= static_cast<int64_t>(tail + 1) * bt) {
      s.partial_chunk = tail;
      s.partial.assign(static_cast<size_t>(config().n_layers), {});
      for (int l = 1; l < config().n_layers; ++l) {
        if (s.plan.kv(l)) continue;
        absl::StatusOr<std::vector<uint8_t>> rows = Checkpoint(s, tail, l);
        if (rows.ok()) s.partial[l] = Elements<float>(*rows);
      }
    }
  }
  if (s.partial_chunk >= 0 &&
      (s.partial_chunk > tail || (n % bt == 0 && s.partial_chunk >= tail))) {
    s.partial_chunk = -1;  // the captured chunk lies past the end
    s.partial.clear();
  }
  // Checkpoints from the chunk holding the end on are void (K/V of a chunk no longer full too).
  RSD_RETURN_IF_ERROR(tiers_->EvictSession(id, static_cast<uint32_t>(tail)));
  if (!s.resident && static_cast<int64_t>(s.blocks.size()) * bt > n) {
    s.blocks.pop_back();  // a partial checkpointed chunk: its tokens become pending
    std::erase_if(s.evicted, [&](int32_t c) { return c >= tail; });
  }
  s.tokens.resize(n);
  s.cached = std::min(s.cached, std::min<int64_t>(n, static_cast<int64_t>(s.blocks.size()) * bt));
  if (s.evicted.empty() && s.scratch >= 0) {
    pool_->Free(s.scratch);
    s.scratch = -1;
  }
  return absl::OkStatus();
}

// ---- Between turns: spill and restore ----

absl::StatusOr<std::vector<uint8_t>> Engine::ChunkPayload(const SessionId& id, int32_t chunk,
                                                          int layer, bool kv) {
  const Sequence& s = Seq(id);
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  if (chunk < 0 || chunk >= FullChunks(id) || layer < 0 || layer >= config().n_layers ||
      (!kv && layer == 0)) {
    return absl::InvalidArgumentError(absl::StrCat("no payload for chunk ", chunk, " layer ",
                                                   layer));
  }
  if (kv && chunk < static_cast<int32_t>(s.blocks.size()) && s.blocks[chunk] >= 0) {
    std::vector<uint8_t> out(static_cast<size_t>(2 * bt * kvd) * kKvElementBytes);
    RSD_RETURN_IF_ERROR(
        backend_->CopyToHost(out.data(), pool_->view().K(s.blocks[chunk], layer), out.size()));
    return out;
  }
  absl::StatusOr<std::vector<uint8_t>> got = absl::NotFoundError("another form");
  const bool captured = kv || CapturesResiduals(s) || !s.resident;
  if (s.plan.kv(layer) == kv && captured) got = Checkpoint(s, chunk, layer);
  if (!got.ok()) {
    if (got.status().code() == absl::StatusCode::kDataLoss) return got.status();
    return absl::FailedPreconditionError(absl::StrCat(
        "chunk ", chunk, " layer ", layer, " has no ", kv ? "K/V" : "residual",
        " copy (residuals are kept only with keep_residuals or a residual-form budget)"));
  }
  return got;
}

absl::Status Engine::Spill(const SessionId& id, const LayerPlan& plan) {
  Sequence& s = Seq(id);
  if (plan.size() != config().n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer plan has ", plan.size(), " layers, the model ", config().n_layers));
  }
  if (!s.dropped.empty()) {
    return absl::FailedPreconditionError("a lossy policy dropped blocks: only tokens can spill");
  }
  const int32_t n = FullChunks(id);
  // Every full chunk's checkpoints in the plan's forms first; nothing changes if one is missing.
  for (int32_t c = 0; c < n; ++c) {
    for (int l = 0; l < config().n_layers; ++l) {
      const bool kv = plan.kv(l);
      if (!kv && l == 0) continue;  // layer 0's residual is the token embedding
      const bool hot = s.blocks[c] >= 0;
      if (kv && s.plan.kv(l) && !hot) continue;  // its K/V checkpoint is in the tiers already
      if (!kv && !s.plan.kv(l) && (CapturesResiduals(s) || !s.resident)) continue;  // captured
      RSD_ASSIGN_OR_RETURN(std::vector<uint8_t> payload, ChunkPayload(id, c, l, kv));
      RSD_RETURN_IF_ERROR(OffloadCheckpoint(s.id, c, l, plan.form(l), payload));
    }
  }
  FreeBlocks(s);
  s.blocks.assign(static_cast<size_t>(n), kEvicted);
  s.evicted.clear();
  for (int32_t c = 0; c < n; ++c) s.evicted.push_back(c);
  s.plan = plan;
  s.cached = static_cast<int64_t>(n) * model_->block_tokens();
  s.partial_chunk = -1;
  s.partial.clear();
  // Checkpoints past the full chunks (a partial chunk's) are void.
  RSD_RETURN_IF_ERROR(tiers_->EvictSession(id, static_cast<uint32_t>(n)));
  s.resident = false;
  return absl::OkStatus();
}

absl::Status Engine::DropState(const SessionId& id) {
  Sequence& s = Seq(id);
  FreeBlocks(s);
  s.evicted.clear();
  s.dropped.clear();
  s.eviction = EvictionState{};
  s.partial_chunk = -1;
  s.partial.clear();
  s.cached = 0;
  s.plan = plan_;
  s.resident = false;
  return tiers_->EvictSession(id);
}

absl::Status Engine::RestoreChunkToHot(Sequence& s, int32_t chunk) {
  return RestoreChunksToHot(s, std::span<const int32_t>(&chunk, 1));
}

absl::Status Engine::RestoreChunksToHot(Sequence& s, std::span<const int32_t> chunks) {
  std::vector<int32_t> blocks;
  auto give_back = [&](absl::Status st) {
    (void)backend_->WaitTransfers();  // nothing in flight into the blocks we give back
    for (int32_t b : blocks) pool_->Free(b);
    return st;
  };
  for (size_t i = 0; i < chunks.size(); ++i) {
    absl::StatusOr<int32_t> block = pool_->Allocate();
    if (!block.ok()) return give_back(block.status());
    blocks.push_back(*block);
  }
  std::vector<ChunkState> cs(chunks.size());
  std::vector<const ChunkState*> states;
  for (const ChunkState& c : cs) states.push_back(&c);
  for (int l = 0; l < config().n_layers; ++l) {
    // K/V layers travel on the transfer stream while residual layers rebuild on the compute one;
    // a layer's residual chunks rebuild in one pass.
    for (size_t i = 0; i < chunks.size(); ++i) {
      absl::Status st = LoadChunk(s, l, chunks[i], &cs[i]);
      if (!st.ok()) return give_back(st);
    }
    absl::Status st =
        model_->RebuildIntoBlocks(l, chunks, states, blocks, pool_->view(), staging_.get());
    if (!st.ok()) return give_back(st);
  }
  // Compute from here on (the next forward) sees the transferred layers.
  RSD_RETURN_IF_ERROR(backend_->FenceTransfers());
  for (size_t i = 0; i < chunks.size(); ++i) {
    s.blocks[chunks[i]] = blocks[i];
    std::erase(s.evicted, chunks[i]);
  }
  return absl::OkStatus();
}

int32_t Engine::ShareForRestore(Sequence& s, const SessionId& donor, int32_t n) {
  if (bounded() || !eviction_->exact() || !HasSequence(donor) || donor == s.id) return 0;
  const Sequence& d = Seq(donor);
  const int64_t bt = model_->block_tokens();
  if (!d.resident || n <= 0 || n > FullChunks(s.id) ||
      static_cast<int64_t>(s.tokens.size()) < n * bt) {
    return 0;
  }
  const std::span<const int32_t> tokens(s.tokens.data(), static_cast<size_t>(n * bt));
  if (!CheckPrefixOf(d, tokens, n).ok()) return 0;
  for (int32_t c = 0; c < n; ++c) {
    if (s.blocks[c] != kEvicted) return 0;
  }
  for (int32_t c = 0; c < n; ++c) {
    pool_->Retain(d.blocks[c]);
    s.blocks[c] = d.blocks[c];
    s.evicted.erase(std::find(s.evicted.begin(), s.evicted.end(), c));
  }
  return n;
}

absl::StatusOr<std::string> Engine::Restore(const SessionId& id, const SessionId* donor,
                                            int32_t donor_chunks) {
  Sequence& s = Seq(id);
  if (s.resident) return std::string("hot");
  if (s.evicted.empty()) {
    s.resident = true;  // nothing checkpointed: its pending tokens rebuild it
    return std::string(s.tokens.empty() ? "new" : "tokens");
  }
  RSD_ASSIGN_OR_RETURN(const char* where, tiers_->DeepestHolding(id));
  const int32_t shared = donor != nullptr ? ShareForRestore(s, *donor, donor_chunks) : 0;
  // Bring back the most recent chunks that fit; a bounded sequence keeps older ones evicted (and
  // a block for the tail). On an error every chunk brought back goes out again.
  std::vector<int32_t> restored;
  absl::Status st;
  int32_t hot = 0;
  std::vector<int32_t> batch;  // up to the model's rebuild_chunks() chunks restored together
  auto flush = [&] {
    if (batch.empty() || !st.ok()) return;
    st = RestoreChunksToHot(s, batch);
    if (st.ok()) restored.insert(restored.end(), batch.begin(), batch.end());
    batch.clear();
  };
  for (int32_t c = static_cast<int32_t>(s.blocks.size()) - 1; c >= 0 && st.ok(); --c) {
    if (bounded() && hot + 1 > budget_blocks_ - 1) break;
    if (s.blocks[c] != kEvicted) continue;
    batch.push_back(c);
    ++hot;
    if (static_cast<int>(batch.size()) == model_->rebuild_chunks()) flush();
  }
  flush();
  if (st.ok() && !s.evicted.empty() && s.scratch < 0) {
    absl::StatusOr<int32_t> scratch = pool_->Allocate();
    if (scratch.ok()) {
      s.scratch = *scratch;
    } else {
      st = scratch.status();
    }
  }
  if (!st.ok()) {
    for (int32_t c = 0; c < shared; ++c) restored.push_back(c);
    for (int32_t c : restored) {
      pool_->Free(s.blocks[c]);
      s.blocks[c] = kEvicted;
      InsertSorted(s.evicted, c);
    }
    return st;
  }
  s.resident = true;
  s.peak_hot = std::max(s.peak_hot, HotBlocks(s) + (s.scratch >= 0 ? 1 : 0));
  return std::string(where != nullptr ? where : "warm");
}

}  // namespace rsd
