// The engine's hot-tier bookkeeping: budgets, eviction to checkpoints, rebuild sources, restore,
// truncation and the per-layer form plan. Split from engine.cc by concern.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "worker/engine/engine.h"

namespace rsd {

int32_t Engine::HotBlocks(const Sequence& s) const {
  int32_t n = 0;
  for (int32_t b : s.blocks) n += b >= 0;
  return n;
}

SequenceMemory Engine::SequenceMemoryUse(int32_t seq) const {
  const Sequence& s = seqs_.at(seq);
  SequenceMemory m;
  m.hot_blocks = HotBlocks(s) + (s.scratch >= 0 ? 1 : 0);
  m.peak_hot_blocks = s.peak_hot;
  m.evicted_blocks = static_cast<int32_t>(s.evicted.size());
  for (const auto& [chunk, layers] : s.checkpoints) {
    for (const auto& data : layers) {
      m.checkpoint_bytes += static_cast<int64_t>(data.size() * sizeof(float));
    }
  }
  return m;
}

int64_t Engine::MaxStepTokens(int32_t seq) const {
  const Sequence& s = seqs_.at(seq);
  const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
  if (!bounded()) return model_->max_context() - static_cast<int64_t>(s.tokens.size());
  const int64_t bt = model_->block_tokens();
  return static_cast<int64_t>(budget_blocks_) * bt - s.cached % bt - pending;
}

int64_t Engine::PendingTokens(int32_t seq) const {
  const Sequence& s = seqs_.at(seq);
  return static_cast<int64_t>(s.tokens.size()) - s.cached;
}

int64_t Engine::MaxPendingFeed(int32_t seq) const {
  const Sequence& s = seqs_.at(seq);
  const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
  if (!bounded()) return pending;
  const int64_t bt = model_->block_tokens();
  return std::min<int64_t>(pending, static_cast<int64_t>(budget_blocks_) * bt - s.cached % bt);
}

absl::Status Engine::LoadChunk(const Sequence& s, int layer, int32_t chunk, ChunkState* out) const {
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  const bool kv = s.layer_kv[layer] != 0;
  if (!kv && layer == 0) {
    out->kind = ChunkState::Kind::kTokens;
    out->tokens.assign(s.tokens.begin() + chunk * bt, s.tokens.begin() + (chunk + 1) * bt);
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<float>> got = CheckpointOf(s, chunk, layer);
  if (!got.ok()) {
    return absl::DataLossError(absl::StrCat("no checkpoint for evicted chunk ", chunk, " layer ",
                                            layer, ": ", got.status().message()));
  }
  const std::vector<float>& data = *got;
  if (kv) {
    out->kind = ChunkState::Kind::kKv;
    out->k.assign(data.begin(), data.begin() + bt * kvd);
    out->v.assign(data.begin() + bt * kvd, data.end());
  } else {
    out->kind = ChunkState::Kind::kResidual;
    out->h = data;
  }
  return absl::OkStatus();
}

bool Engine::HasResidualLayers(const Sequence& s) const {
  for (size_t l = 1; l < s.layer_kv.size(); ++l) {
    if (!s.layer_kv[l]) return true;
  }
  return false;
}

absl::Status Engine::CaptureResiduals(Sequence& s, int64_t first_pos, int64_t n,
                                      const ForwardResult& r, int64_t row0) {
  const int64_t bt = model_->block_tokens(), d = config().d_model, L = config().n_layers;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = first_pos + t;
    const int32_t chunk = static_cast<int32_t>(pos / bt);
    std::vector<std::vector<float>>& ck = s.checkpoints[chunk];
    ck.resize(static_cast<size_t>(L));
    for (int64_t l = 1; l < L; ++l) {
      if (s.layer_kv[l]) continue;
      ck[l].resize(static_cast<size_t>(bt * d));
      const float* src = r.residuals.data() + (l * r.n_rows + row0 + t) * d;
      std::copy(src, src + d, ck[l].data() + (pos % bt) * d);
    }
    if (pos % bt == bt - 1) RSD_RETURN_IF_ERROR(StoreChunk(s, chunk));
  }
  return absl::OkStatus();
}

absl::Status Engine::StoreChunk(Sequence& s, int32_t chunk) {
  if (store_ == nullptr) return absl::OkStatus();
  auto it = s.checkpoints.find(chunk);
  if (it == s.checkpoints.end()) return absl::OkStatus();
  for (size_t l = 0; l < it->second.size(); ++l) {
    std::vector<float>& data = it->second[l];
    if (data.empty()) continue;
    RSD_RETURN_IF_ERROR(store_->Put(s.id, chunk, static_cast<int>(l), s.layer_kv[l] != 0, data));
    data.clear();
    data.shrink_to_fit();
  }
  s.checkpoints.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Engine::CheckpointOf(const Sequence& s, int32_t chunk,
                                                        int layer) const {
  auto it = s.checkpoints.find(chunk);
  if (it != s.checkpoints.end() && static_cast<int>(it->second.size()) > layer &&
      !it->second[layer].empty()) {
    return it->second[layer];
  }
  if (store_ == nullptr) return absl::NotFoundError("not in engine memory");
  return store_->Get(s.id, chunk, layer, s.layer_kv[layer] != 0);
}

absl::Status Engine::EnforceBudget(Sequence& s, int32_t incoming) {
  const int64_t bt = model_->block_tokens();
  const int64_t L = config().n_layers, kvd = model_->kv_dim();
  while (HotBlocks(s) + incoming > budget_blocks_) {
    int32_t victim = -1;
    for (size_t c = 0; c < s.blocks.size(); ++c) {
      // StreamingLLM keeps block 0 (the attention sinks) while anything else can go.
      if (evict_ == Evict::kStreaming && c == 0 && HotBlocks(s) > 1) continue;
      if (s.blocks[c] >= 0 && static_cast<int64_t>(c + 1) * bt <= s.cached) {
        victim = static_cast<int32_t>(c);
        break;
      }
    }
    if (evict_ == Evict::kH2O || evict_ == Evict::kTova || evict_ == Evict::kSnapKv) {
      // The full hot block with the least attention mass (accumulated for H2O, the latest step's
      // for TOVA, the last prefill's observation window's for SnapKV, where blocks written after
      // that scoring rank above every scored one), sparing the newest one.
      int32_t newest = -1;
      for (size_t c = 0; c < s.blocks.size(); ++c) {
        if (s.blocks[c] >= 0 && static_cast<int64_t>(c + 1) * bt <= s.cached) newest = c;
      }
      auto score = [&](int32_t c) {
        if (evict_ == Evict::kSnapKv && c >= s.mass_chunks) return HUGE_VAL;
        return c < static_cast<int32_t>(s.mass.size()) ? s.mass[c] : 0.0;
      };
      victim = -1;
      for (int32_t c = 0; c < newest; ++c) {
        if (s.blocks[c] < 0) continue;
        if (victim < 0 || score(c) < score(victim)) victim = c;
      }
      if (victim < 0) victim = newest;
    }
    if (victim >= 0 && evict_ != Evict::kExact) {
      // Lossy baseline: the block is gone; attention skips it from now on.
      pool_->Free(s.blocks[victim]);
      s.blocks[victim] = -2;
      s.dropped.insert(std::upper_bound(s.dropped.begin(), s.dropped.end(), victim), victim);
      continue;
    }
    if (victim < 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "hot budget of ", budget_blocks_, " blocks cannot hold this step"));
    }
    const int32_t block = s.blocks[victim];
    std::vector<std::vector<float>>& ck = s.checkpoints[victim];
    ck.resize(static_cast<size_t>(L));
    // The block's K/V layers leave through the staging ring on the transfer stream (after the
    // compute that wrote them), then land in the checkpoints.
    const size_t layer_bytes = static_cast<size_t>(2 * bt * kvd) * sizeof(float);
    int64_t kv_layers = 0;
    for (int64_t l = 0; l < L; ++l) kv_layers += s.layer_kv[l] != 0;
    if (kv_layers > 0) {
      RSD_ASSIGN_OR_RETURN(void* ring, staging_->Reserve(kv_layers * layer_bytes));
      uint8_t* at = static_cast<uint8_t*>(ring);
      for (int64_t l = 0; l < L; ++l) {
        if (!s.layer_kv[l]) continue;
        RSD_RETURN_IF_ERROR(backend_->CopyToHostAsync(
            at, pool_->view().K(block, static_cast<int>(l)), layer_bytes));
        at += layer_bytes;
      }
      RSD_RETURN_IF_ERROR(backend_->WaitTransfers());
      at = static_cast<uint8_t*>(ring);
      for (int64_t l = 0; l < L; ++l) {
        if (!s.layer_kv[l]) continue;
        ck[l].resize(static_cast<size_t>(2 * bt * kvd));
        std::memcpy(ck[l].data(), at, layer_bytes);
        at += layer_bytes;
      }
    }
    for (int64_t l = 1; l < L; ++l) {
      if (!s.layer_kv[l] && store_ == nullptr) {
        RSD_CHECK(!ck[l].empty());  // captured when its tokens were processed
      }
    }
    RSD_RETURN_IF_ERROR(StoreChunk(s, victim));
    if (options_.poison_freed_blocks) RSD_RETURN_IF_ERROR(pool_->Poison(block, 0xFF));
    pool_->Free(block);
    s.blocks[victim] = -1;
    s.evicted.push_back(victim);
    if (s.scratch < 0) {
      RSD_ASSIGN_OR_RETURN(s.scratch, pool_->Allocate());
    }
  }
  return absl::OkStatus();
}

absl::Status Engine::TruncateSequence(int32_t seq, int64_t n) {
  Sequence& s = Seq(seq);
  if (n >= static_cast<int64_t>(s.tokens.size())) return absl::OkStatus();
  const int64_t bt = model_->block_tokens();
  const int64_t keep_chunks = (n + bt - 1) / bt;
  while (static_cast<int64_t>(s.blocks.size()) > keep_chunks) {
    if (s.blocks.back() >= 0) pool_->Free(s.blocks.back());
    s.blocks.pop_back();
  }
  std::erase_if(s.evicted, [&](int32_t c) { return c >= keep_chunks; });
  std::erase_if(s.dropped, [&](int32_t c) { return c >= keep_chunks; });
  if (n % bt != 0 && n / bt < static_cast<int64_t>(s.blocks.size()) && s.blocks[n / bt] == -2) {
    return absl::FailedPreconditionError("cannot roll back into a block a lossy policy dropped");
  }
  // The chunk now holding the end of the history must be hot to take new tokens.
  const int32_t tail = static_cast<int32_t>(n / bt);
  if (n % bt != 0 && tail < static_cast<int32_t>(s.blocks.size()) && s.blocks[tail] < 0) {
    RSD_RETURN_IF_ERROR(RestoreChunkToHot(s, tail));
  }
  if (store_ != nullptr) {
    // A stored chunk the history now ends inside comes back to engine memory (its residual rows
    // before `n` stay valid; the rest are rewritten when recomputed); stored chunks from there on
    // are void.
    const int32_t first_void = static_cast<int32_t>(n / bt);
    if (n % bt != 0 && s.cached >= (first_void + 1) * bt && !s.checkpoints.count(first_void)) {
      std::vector<std::vector<float>>& ck = s.checkpoints[first_void];
      ck.resize(static_cast<size_t>(config().n_layers));
      for (int l = 1; l < config().n_layers; ++l) {
        if (s.layer_kv[l]) continue;
        absl::StatusOr<std::vector<float>> rows = store_->Get(s.id, first_void, l, false);
        if (rows.ok()) ck[l] = *std::move(rows);
      }
    }
    RSD_RETURN_IF_ERROR(store_->Truncate(s.id, first_void));
  }
  s.tokens.resize(n);
  s.cached = std::min(s.cached, n);
  // Checkpoints past the end are void; a K/V checkpoint of a chunk that is no longer full too
  // (residual rows before `n` stay valid and later rows are rewritten when recomputed).
  for (auto it = s.checkpoints.begin(); it != s.checkpoints.end();) {
    if (it->first >= keep_chunks) {
      it = s.checkpoints.erase(it);
      continue;
    }
    if (it->first >= n / bt) {  // no longer full: its K/V copies are void
      for (size_t l = 0; l < it->second.size(); ++l) {
        if (s.layer_kv[l]) it->second[l].clear();
      }
    }
    ++it;
  }
  if (s.evicted.empty() && s.scratch >= 0) {
    pool_->Free(s.scratch);
    s.scratch = -1;
  }
  return absl::OkStatus();
}

int32_t Engine::FullChunks(int32_t seq) const {
  const Sequence& s = seqs_.at(seq);
  return static_cast<int32_t>(s.cached / model_->block_tokens());
}

absl::StatusOr<std::vector<float>> Engine::ChunkPayload(int32_t seq, int32_t chunk, int layer,
                                                        bool kv) const {
  const Sequence& s = seqs_.at(seq);
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  if (chunk < 0 || chunk >= FullChunks(seq) || layer < 0 || layer >= config().n_layers ||
      (!kv && layer == 0)) {
    return absl::InvalidArgumentError(absl::StrCat("no payload for chunk ", chunk, " layer ",
                                                   layer));
  }
  if (kv && s.blocks[chunk] >= 0) {
    std::vector<float> out(static_cast<size_t>(2 * bt * kvd));
    RSD_RETURN_IF_ERROR(backend_->CopyToHost(out.data(), pool_->view().K(s.blocks[chunk], layer),
                                             out.size() * sizeof(float)));
    return out;
  }
  absl::StatusOr<std::vector<float>> got = absl::NotFoundError("another form");
  if ((s.layer_kv[layer] != 0) == kv) got = CheckpointOf(s, chunk, layer);
  if (!got.ok()) {
    if (got.status().code() == absl::StatusCode::kDataLoss) return got.status();
    return absl::FailedPreconditionError(absl::StrCat(
        "chunk ", chunk, " layer ", layer, " has no ", kv ? "K/V" : "residual",
        " copy (residuals are kept only with keep_residuals or a residual-form budget)"));
  }
  return got;
}

absl::Status Engine::RestoreChunkToHot(Sequence& s, int32_t chunk) {
  RSD_ASSIGN_OR_RETURN(int32_t block, pool_->Allocate());
  ChunkState cs;
  for (int l = 0; l < config().n_layers; ++l) {
    // K/V layers travel on the transfer stream while residual layers rebuild on the compute one.
    absl::Status st = s.loader(l, chunk, &cs);
    if (st.ok()) st = model_->RebuildIntoBlock(l, chunk, cs, block, pool_->view(), staging_.get());
    if (!st.ok()) {
      (void)backend_->WaitTransfers();  // nothing in flight into the block we give back
      pool_->Free(block);
      return st;
    }
  }
  // Compute from here on (the next forward) sees the transferred layers.
  RSD_RETURN_IF_ERROR(backend_->FenceTransfers());
  s.blocks[chunk] = block;
  std::erase(s.evicted, chunk);
  return absl::OkStatus();
}

absl::StatusOr<int32_t> Engine::ImportSequence(
    std::span<const int32_t> tokens, int32_t n_chunks, const std::vector<uint8_t>& layer_kv,
    const std::function<absl::StatusOr<std::vector<float>>(int32_t, int)>& load) {
  const int64_t bt = model_->block_tokens(), d = config().d_model, kvd = model_->kv_dim();
  const int64_t L = config().n_layers;
  if (static_cast<int64_t>(n_chunks) * bt > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError("more chunks than the history holds");
  }
  if (static_cast<int64_t>(layer_kv.size()) != L) {
    return absl::InvalidArgumentError(absl::StrCat("layer plan has ", layer_kv.size(),
                                                   " layers, the model ", L));
  }
  const int32_t seq = CreateSequence();
  Sequence& s = Seq(seq);
  s.layer_kv = layer_kv;
  s.tokens.assign(tokens.begin(), tokens.end());
  s.cached = static_cast<int64_t>(n_chunks) * bt;
  s.blocks.assign(n_chunks, -1);
  for (int32_t c = 0; c < n_chunks; ++c) {
    std::vector<std::vector<float>>& ck = s.checkpoints[c];
    ck.resize(static_cast<size_t>(L));
    for (int64_t l = 0; l < L; ++l) {
      if (!layer_kv[l] && l == 0) continue;  // from the tokens
      absl::StatusOr<std::vector<float>> p = load(c, static_cast<int>(l));
      const size_t want = static_cast<size_t>(layer_kv[l] ? 2 * bt * kvd : bt * d);
      if (p.ok() && p->size() != want) {
        p = absl::DataLossError(absl::StrCat("chunk ", c, " layer ", l, " has ", p->size(),
                                             " values, expected ", want));
      }
      if (!p.ok()) {
        DestroySequence(seq);
        return p.status();
      }
      ck[l] = *std::move(p);
    }
    absl::Status st = StoreChunk(s, c);
    if (!st.ok()) {
      DestroySequence(seq);
      return st;
    }
    s.evicted.push_back(c);
  }
  // Bring back the most recent chunks that fit; a bounded sequence keeps older ones evicted.
  int32_t hot = 0;
  for (int32_t c = n_chunks - 1; c >= 0; --c) {
    if (bounded() && hot + 1 > budget_blocks_ - 1) break;  // keep a block for the tail
    absl::Status st = RestoreChunkToHot(s, c);
    if (!st.ok()) {
      DestroySequence(seq);
      return st;
    }
    ++hot;
  }
  if (!s.evicted.empty() && s.scratch < 0) {
    absl::StatusOr<int32_t> scratch = pool_->Allocate();
    if (!scratch.ok()) {
      DestroySequence(seq);
      return scratch.status();
    }
    s.scratch = *scratch;
  }
  s.peak_hot = std::max(s.peak_hot, HotBlocks(s) + (s.scratch >= 0 ? 1 : 0));
  return seq;
}

absl::Status Engine::PlanLayers() {
  const int L = config().n_layers;
  const ModelConfig& c = config();
  plan_.assign(L, spill_kv_ ? 1 : 0);
  if (!options_.layer_forms.empty()) {
    if (static_cast<int>(options_.layer_forms.size()) != L) {
      return absl::InvalidArgumentError(absl::StrCat("layer_forms has ", options_.layer_forms.size(),
                                                     " letters for ", L, " layers"));
    }
    for (int l = 0; l < L; ++l) {
      const char f = options_.layer_forms[l];
      if (f != 'r' && f != 'k') {
        return absl::InvalidArgumentError(absl::StrCat("layer_forms letter '", std::string(1, f),
                                                       "' is not r or k"));
      }
      plan_[l] = f == 'k';
    }
    return absl::OkStatus();
  }
  if (options_.spill_form != "auto") return absl::OkStatus();
  // Calibrate: host bandwidth (a large copy) and the rebuild of one chunk of one layer.
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  plan_bw_ = options_.planner_bytes_per_second;
  if (plan_bw_ <= 0) {
    std::vector<char> a(64 << 20, 1), b(64 << 20);
    const double t0 = MonotonicSeconds();
    std::memcpy(b.data(), a.data(), a.size());
    plan_bw_ = static_cast<double>(a.size()) / std::max(MonotonicSeconds() - t0, 1e-9);
  }
  plan_rebuild_ = options_.planner_rebuild_seconds;
  if (plan_rebuild_ <= 0) {
    RSD_ASSIGN_OR_RETURN(int32_t block, pool_->Allocate());
    ChunkState cs;
    cs.kind = ChunkState::Kind::kResidual;
    cs.h.assign(static_cast<size_t>(bt * c.d_model), 0.5f);
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = MonotonicSeconds();
      RSD_RETURN_IF_ERROR(model_->RebuildIntoBlock(L > 1 ? 1 : 0, 0, cs, block, pool_->view()));
      best = std::min(best, MonotonicSeconds() - t0);
    }
    pool_->Free(block);
    model_->ResetRebuildCounters();
    plan_rebuild_ = best;
  }
  // Restore cost per chunk-layer: bytes through the host tier, plus compute for residuals.
  const double kv_cost = 2.0 * bt * kvd * sizeof(float) / plan_bw_;
  const double res_cost = static_cast<double>(bt) * c.d_model * sizeof(float) / plan_bw_ + plan_rebuild_;
  const double tok_cost = 4.0 * bt / plan_bw_ + plan_rebuild_;  // layer 0: ids -> embedding
  for (int l = 0; l < L; ++l) plan_[l] = (l == 0 ? tok_cost : res_cost) < kv_cost ? 0 : 1;
  return absl::OkStatus();
}

std::string Engine::PlanDescription() const {
  std::string letters;
  for (uint8_t k : plan_) letters += k ? 'k' : 'r';
  if (options_.spill_form != "auto" || !options_.layer_forms.empty()) return letters;
  return absl::StrCat(letters, " (host ", static_cast<int64_t>(plan_bw_ / 1e6), " MB/s, rebuild ",
                      static_cast<int64_t>(plan_rebuild_ * 1e6), " us per chunk-layer)");
}

}  // namespace rsd
