#include "worker/engine/engine.h"

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"
#include "worker/model/model_file.h"

namespace rsd {

namespace {
double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  if (options.threads < 1 || options.threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("threads must be in [1, 256], got ",
                                                   options.threads));
  }
  cpu::Isa isa = cpu::DefaultIsa();
  if (!options.isa.empty()) {
    if (!cpu::ParseIsa(options.isa.c_str(), &isa)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown ISA path '", options.isa,
                                                     "' (scalar, avx2, avx512)"));
    }
    if (!cpu::IsaSupported(isa)) {
      return absl::FailedPreconditionError(absl::StrCat("this CPU does not support the ",
                                                        options.isa, " path"));
    }
  }
  e->backend_ = std::make_unique<cpu::CpuBackend>(options.threads, isa);
  RSD_ASSIGN_OR_RETURN(std::unique_ptr<ModelFile> file, LoadModel(options.model_path));
  e->model_fingerprint_ = file->fingerprint;
  e->model_format_ = file->format;
  RSD_ASSIGN_OR_RETURN(e->tokenizer_, Tokenizer::Create(file->tokenizer));
  RSD_ASSIGN_OR_RETURN(e->template_, ChatTemplate::Create(file->chat_template, e->tokenizer_.get()));
  TransformerOptions topt;
  topt.max_context = options.max_context;
  topt.block_tokens = options.block_tokens;
  RSD_ASSIGN_OR_RETURN(e->model_, Transformer::Create(*file, e->backend_.get(), topt));
  e->model_->set_poison_rebuilds(options.poison_freed_blocks);
  const Transformer& m = *e->model_;
  size_t budget = options.kv_budget_bytes;
  if (budget == 0) {
    budget = static_cast<size_t>(m.state_bytes_per_token().kv) *
             static_cast<size_t>(m.max_context() + m.block_tokens());
  }
  RSD_ASSIGN_OR_RETURN(e->pool_, KvBlockPool::Create(e->backend_.get(), m.config().n_layers,
                                                     m.kv_dim(), m.block_tokens(), budget));
  if (options.prefill_chunk < 1) return absl::InvalidArgumentError("prefill_chunk must be >= 1");
  if (options.spill_form != "residual" && options.spill_form != "kv" &&
      options.spill_form != "auto") {
    return absl::InvalidArgumentError(absl::StrCat("spill form '", options.spill_form,
                                                   "' is not one of residual, kv, auto"));
  }
  if (options.hot_budget_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("hot budget must be >= 0 tokens, got ",
                                                   options.hot_budget_tokens));
  }
  e->spill_kv_ = options.spill_form == "kv";
  RSD_RETURN_IF_ERROR(e->PlanLayers());
  if (options.evict == "window") {
    e->evict_ = Evict::kWindow;
  } else if (options.evict == "streaming") {
    e->evict_ = Evict::kStreaming;
  } else if (options.evict == "h2o") {
    e->evict_ = Evict::kH2O;
  } else if (options.evict != "exact") {
    return absl::InvalidArgumentError(absl::StrCat(
        "eviction policy '", options.evict, "' is not one of exact, window, streaming, h2o"));
  }
  if (options.hot_budget_tokens > 0) {
    // A budget below one block rounds up to one block.
    e->budget_blocks_ = std::max(1, (options.hot_budget_tokens + m.block_tokens() - 1) /
                                        m.block_tokens());
  }
  return e;
}

Engine::~Engine() {
  // Blocks go back to the pool before the pool and backend go away.
  seqs_.clear();
  pool_.reset();
  model_.reset();
}

int32_t Engine::CreateSequence() {
  const int32_t id = next_seq_++;
  Sequence& s = seqs_[id];
  s.layer_kv = plan_;
  s.loader = [this, id](int layer, int32_t chunk, ChunkState* out) {
    return LoadChunk(seqs_.at(id), layer, chunk, out);
  };
  return id;
}

Engine::Sequence& Engine::Seq(int32_t id) {
  auto it = seqs_.find(id);
  RSD_CHECK(it != seqs_.end());
  return it->second;
}

void Engine::DestroySequence(int32_t seq) {
  Sequence& s = Seq(seq);
  for (int32_t b : s.blocks) {
    if (b >= 0) pool_->Free(b);
  }
  if (s.scratch >= 0) pool_->Free(s.scratch);
  seqs_.erase(seq);
}

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

absl::Status Engine::LoadChunk(const Sequence& s, int layer, int32_t chunk, ChunkState* out) const {
  const int64_t bt = model_->block_tokens(), kvd = model_->kv_dim();
  const bool kv = s.layer_kv[layer] != 0;
  if (!kv && layer == 0) {
    out->kind = ChunkState::Kind::kTokens;
    out->tokens.assign(s.tokens.begin() + chunk * bt, s.tokens.begin() + (chunk + 1) * bt);
    return absl::OkStatus();
  }
  auto it = s.checkpoints.find(chunk);
  if (it == s.checkpoints.end() || it->second[layer].empty()) {
    return absl::DataLossError(absl::StrCat("no checkpoint for evicted chunk ", chunk, " layer ",
                                            layer));
  }
  const std::vector<float>& data = it->second[layer];
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

void Engine::CaptureResiduals(Sequence& s, int64_t first_pos, int64_t n, const ForwardResult& r,
                              int64_t row0) {
  const int64_t bt = model_->block_tokens(), d = config().d_model, L = config().n_layers;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = first_pos + t;
    std::vector<std::vector<float>>& ck = s.checkpoints[static_cast<int32_t>(pos / bt)];
    ck.resize(static_cast<size_t>(L));
    for (int64_t l = 1; l < L; ++l) {
      if (s.layer_kv[l]) continue;
      ck[l].resize(static_cast<size_t>(bt * d));
      const float* src = r.residuals.data() + (l * r.n_rows + row0 + t) * d;
      std::copy(src, src + d, ck[l].data() + (pos % bt) * d);
    }
  }
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
    if (evict_ == Evict::kH2O) {
      // The full hot block with the least accumulated attention mass, sparing the newest one.
      int32_t newest = -1;
      for (size_t c = 0; c < s.blocks.size(); ++c) {
        if (s.blocks[c] >= 0 && static_cast<int64_t>(c + 1) * bt <= s.cached) newest = c;
      }
      victim = -1;
      for (int32_t c = 0; c < newest; ++c) {
        if (s.blocks[c] < 0) continue;
        const double mc = c < static_cast<int32_t>(s.mass.size()) ? s.mass[c] : 0.0;
        const double mv = victim >= 0 && victim < static_cast<int32_t>(s.mass.size())
                              ? s.mass[victim] : 0.0;
        if (victim < 0 || mc < mv) victim = c;
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
    for (int64_t l = 0; l < L; ++l) {
      if (s.layer_kv[l]) {
        ck[l].resize(static_cast<size_t>(2 * bt * kvd));
        backend_->CopyToHost(ck[l].data(), pool_->view().K(block, static_cast<int>(l)),
                             ck[l].size() * sizeof(float));
      } else if (l > 0) {
        RSD_CHECK(!ck[l].empty());  // captured when its tokens were processed
      }
    }
    if (options_.poison_freed_blocks) pool_->Poison(block, 0xFF);
    pool_->Free(block);
    s.blocks[victim] = -1;
    s.evicted.push_back(victim);
    if (s.scratch < 0) {
      RSD_ASSIGN_OR_RETURN(s.scratch, pool_->Allocate());
    }
  }
  return absl::OkStatus();
}

const std::vector<int32_t>& Engine::SequenceTokens(int32_t seq) const {
  return seqs_.at(seq).tokens;
}
const std::vector<int32_t>& Engine::SequenceBlocks(int32_t seq) const {
  return seqs_.at(seq).blocks;
}

absl::Status Engine::EnsureBlocks(Sequence& s, int64_t n_tokens) {
  const int64_t bt = model_->block_tokens();
  if (bounded()) {
    const int64_t have = static_cast<int64_t>(s.blocks.size());
    const int64_t need = (n_tokens + bt - 1) / bt;
    RSD_RETURN_IF_ERROR(EnforceBudget(s, static_cast<int32_t>(std::max<int64_t>(0, need - have))));
  }
  while (static_cast<int64_t>(s.blocks.size()) * bt < n_tokens) {
    RSD_ASSIGN_OR_RETURN(int32_t b, pool_->Allocate());
    s.blocks.push_back(b);
  }
  s.peak_hot = std::max(s.peak_hot, HotBlocks(s) + (s.scratch >= 0 ? 1 : 0));
  return absl::OkStatus();
}

absl::Status Engine::Step(std::span<const Work> work, bool capture_residuals, ForwardResult* out) {
  std::vector<SeqInput> inputs;
  std::vector<std::vector<int32_t>> feeds(work.size()), tables(work.size());
  inputs.reserve(work.size());
  const int64_t bt = model_->block_tokens();
  for (size_t i = 0; i < work.size(); ++i) {
    const Work& w = work[i];
    auto it = seqs_.find(w.seq);
    if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", w.seq));
    Sequence& s = it->second;
    const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
    const int64_t take = w.pending_limit < 0 ? pending : std::min(pending, w.pending_limit);
    if (take < pending && !w.tokens.empty()) {
      return absl::InvalidArgumentError("new tokens cannot follow a partial feed of pending ones");
    }
    feeds[i].assign(s.tokens.begin() + s.cached, s.tokens.begin() + s.cached + take);
    feeds[i].insert(feeds[i].end(), w.tokens.begin(), w.tokens.end());
    const int64_t end = s.cached + static_cast<int64_t>(feeds[i].size());
    if (end > model_->max_context()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence would hold ", end, " tokens; the context is ", model_->max_context()));
    }
    if (bounded() && !feeds[i].empty() &&
        (end - 1) / bt - s.cached / bt + 1 > budget_blocks_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a step of ", feeds[i].size(), " tokens spans more than the hot budget of ",
          budget_blocks_, " blocks; feed at most ", MaxStepTokens(w.seq) , " new tokens"));
    }
    RSD_RETURN_IF_ERROR(EnsureBlocks(s, end));
    tables[i] = s.blocks;
    int32_t any_hot = 0;
    for (int32_t b : s.blocks) any_hot = b >= 0 ? b : any_hot;
    for (int32_t& b : tables[i]) {
      if (b == -1) b = s.scratch;  // evicted: rebuilt into the scratch block when needed
      if (b == -2) b = any_hot;    // dropped (lossy baselines): skipped by attention
    }
    SeqInput in;
    in.tokens = feeds[i];
    in.start_pos = static_cast<int32_t>(s.cached);
    in.block_table = tables[i];
    in.all_logits = w.all_logits;
    in.evicted_chunks = s.evicted;
    in.scratch_block = s.scratch;
    in.loader = &s.loader;
    in.dropped_chunks = s.dropped;
    if (evict_ == Evict::kH2O && bounded()) in.attention_mass = &s.mass;
    inputs.push_back(in);
  }
  bool keep_any = options_.keep_residuals;
  for (const Work& w : work) {
    keep_any = keep_any || (bounded() && evict_ == Evict::kExact && HasResidualLayers(Seq(w.seq)));
  }
  const bool capture = capture_residuals || keep_any;
  RSD_RETURN_IF_ERROR(model_->Forward(inputs, pool_->view(), capture, out));
  int64_t row0 = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    Sequence& s = seqs_[work[i].seq];
    if (HasResidualLayers(s) && (options_.keep_residuals || (bounded() && evict_ == Evict::kExact))) {
      CaptureResiduals(s, s.cached, static_cast<int64_t>(feeds[i].size()), *out, row0);
    }
    row0 += static_cast<int64_t>(feeds[i].size());
    s.tokens.insert(s.tokens.end(), work[i].tokens.begin(), work[i].tokens.end());
    s.cached += static_cast<int64_t>(feeds[i].size());
  }
  return absl::OkStatus();
}

void Engine::AppendPending(int32_t seq, std::span<const int32_t> tokens) {
  Sequence& s = Seq(seq);
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
}

absl::Status Engine::FlushPending(int32_t seq) {
  ForwardResult fr;
  while (Seq(seq).cached < static_cast<int64_t>(Seq(seq).tokens.size())) {
    const Sequence& s = Seq(seq);
    const int64_t bt = model_->block_tokens();
    int64_t limit = std::min<int64_t>(options_.prefill_chunk,
                                      static_cast<int64_t>(s.tokens.size()) - s.cached);
    if (bounded()) limit = std::min<int64_t>(limit, budget_blocks_ * bt - s.cached % bt);
    Work w{seq, {}, false, limit};
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, &fr));
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
    backend_->CopyToHost(out.data(), pool_->view().K(s.blocks[chunk], layer),
                         out.size() * sizeof(float));
    return out;
  }
  auto it = s.checkpoints.find(chunk);
  const bool have = it != s.checkpoints.end() && static_cast<int>(it->second.size()) > layer &&
                    !it->second[layer].empty() && (s.layer_kv[layer] != 0) == kv;
  if (!have) {
    return absl::FailedPreconditionError(absl::StrCat(
        "chunk ", chunk, " layer ", layer, " has no ", kv ? "K/V" : "residual",
        " copy (residuals are kept only with keep_residuals or a residual-form budget)"));
  }
  return it->second[layer];
}

absl::Status Engine::RestoreChunkToHot(Sequence& s, int32_t chunk) {
  RSD_ASSIGN_OR_RETURN(int32_t block, pool_->Allocate());
  ChunkState cs;
  for (int l = 0; l < config().n_layers; ++l) {
    absl::Status st = s.loader(l, chunk, &cs);
    if (st.ok()) st = model_->RebuildIntoBlock(l, chunk, cs, block, pool_->view());
    if (!st.ok()) {
      pool_->Free(block);
      return st;
    }
  }
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
    const double t0 = Now();
    std::memcpy(b.data(), a.data(), a.size());
    plan_bw_ = static_cast<double>(a.size()) / std::max(Now() - t0, 1e-9);
  }
  plan_rebuild_ = options_.planner_rebuild_seconds;
  if (plan_rebuild_ <= 0) {
    RSD_ASSIGN_OR_RETURN(int32_t block, pool_->Allocate());
    ChunkState cs;
    cs.kind = ChunkState::Kind::kResidual;
    cs.h.assign(static_cast<size_t>(bt * c.d_model), 0.5f);
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = Now();
      RSD_RETURN_IF_ERROR(model_->RebuildIntoBlock(L > 1 ? 1 : 0, 0, cs, block, pool_->view()));
      best = std::min(best, Now() - t0);
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

std::vector<int32_t> Engine::EncodePrompt(const std::string& text) const {
  std::vector<int32_t> ids;
  if (tokenizer_->spec().add_bos && tokenizer_->spec().bos_id >= 0) {
    ids.push_back(tokenizer_->spec().bos_id);
  }
  std::vector<int32_t> body = tokenizer_->Encode(text, /*parse_special=*/true);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

absl::StatusOr<GenerateResult> Engine::Generate(int32_t seq, std::span<const int32_t> prompt,
                                                const GenerateParams& params,
                                                const std::function<void(int32_t)>& on_token) {
  RSD_RETURN_IF_ERROR(ValidateSamplingParams(params.sampling));
  if (params.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ",
                                                   params.max_tokens));
  }
  if (seqs_.find(seq) == seqs_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown sequence ", seq));
  }
  const int64_t history = static_cast<int64_t>(Seq(seq).tokens.size());
  const int64_t need = history + static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (need > model_->max_context()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "history (", history, ") + prompt (", prompt.size(), ") + max_tokens (",
        params.max_tokens, ") = ", need, " exceeds the context length ", model_->max_context()));
  }
  const Sequence& sq = Seq(seq);
  if (prompt.empty() && sq.cached == static_cast<int64_t>(sq.tokens.size())) {
    return absl::InvalidArgumentError("nothing to feed: empty prompt and no pending tokens");
  }
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<float> last_logits;
  double t0 = Now();
  ForwardResult fr;
  size_t off = 0;
  do {
    const int64_t room = MaxStepTokens(seq);
    const Sequence& cur = Seq(seq);
    const bool pending = cur.cached < static_cast<int64_t>(cur.tokens.size());
    if (room <= 0 && !pending && off < prompt.size()) {
      return absl::InternalError("hot budget leaves no room for a step");
    }
    // room <= 0 with pending tokens: this step feeds only those; the next one has room.
    const size_t n = std::min<size_t>({static_cast<size_t>(options_.prefill_chunk),
                                       prompt.size() - off, static_cast<size_t>(std::max<int64_t>(room, 0))});
    Work w{seq, prompt.subspan(off, n), false};
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, &fr));
    off += n;
  } while (off < prompt.size() || Seq(seq).cached < static_cast<int64_t>(Seq(seq).tokens.size()));
  r.prefill_seconds = Now() - t0;
  last_logits = fr.logits;
  t0 = Now();
  std::vector<int32_t> stop_ids = template_->StopTokens();
  std::string text;
  r.finish_reason = "length";
  for (int i = 0; i < params.max_tokens; ++i) {
    const int64_t position = static_cast<int64_t>(Seq(seq).tokens.size());
    const int32_t tok = SampleToken(last_logits, params.sampling, position);
    if (params.record_logit_hashes) {
      r.logit_hashes.push_back(Hash64(last_logits.data(), last_logits.size() * sizeof(float)));
    }
    r.tokens.push_back(tok);
    if (on_token) on_token(tok);
    const bool is_stop_token =
        params.stop_at_eos && std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end();
    const size_t before = text.size();
    if (!is_stop_token) text += tokenizer_->Decode(std::span<const int32_t>(&tok, 1), false);
    bool hit_stop = false;
    for (const std::string& s : params.stop) {
      if (s.empty()) continue;
      const size_t from = before >= s.size() ? before - s.size() + 1 : 0;
      if (text.find(s, from) != std::string::npos) hit_stop = true;
    }
    // The sampled token joins the history (its K/V is computed only if generation continues).
    const bool last = is_stop_token || hit_stop || i + 1 == params.max_tokens;
    if (is_stop_token) r.finish_reason = "eos";
    if (hit_stop) r.finish_reason = "stop";
    Work w{seq, std::span<const int32_t>(&r.tokens.back(), 1), false};
    if (last) {
      Seq(seq).tokens.push_back(tok);  // pending: its K/V is computed when the next turn starts
      break;
    }
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, &fr));
    last_logits = fr.logits;
  }
  r.decode_seconds = Now() - t0;
  r.text = tokenizer_->Decode(r.tokens, false);
  return r;
}

}  // namespace rsd
