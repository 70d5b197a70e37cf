// The engine: creation, sequences, batched steps and generation. Budgets, eviction, checkpoints,
// spills and restores are in engine_state.cc; the per-layer plan in engine_plan.cc.
#include "worker/engine/engine.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/backend_factory.h"
#include "storage/common/clock.h"
#include "storage/common/hash.h"
#include "storage/common/status.h"
#include "storage/memory_tier.h"
#include "worker/engine/turn_decoder.h"
#include "worker/model/model_file.h"

namespace rsd {

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  e->own_tiers_.Add(std::make_unique<MemoryTier>("engine memory"));
  BackendOptions bo;
  bo.device = options.device;
  bo.threads = options.threads;
  bo.isa = options.isa;
  bo.memory_limit = options.device_memory;
  RSD_ASSIGN_OR_RETURN(e->backend_, CreateBackend(bo));
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
  RSD_ASSIGN_OR_RETURN(
      e->staging_, TransferStaging::Create(e->backend_.get(),
                                           std::max<size_t>(8 << 20, 4 * e->pool_->block_bytes())));
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
  RSD_RETURN_IF_ERROR(e->PlanLayers());
  RSD_ASSIGN_OR_RETURN(e->eviction_, MakeEvictionPolicy(options.evict));
  if (options.hot_budget_tokens > 0) {
    // A budget below one block rounds up to one block.
    e->budget_blocks_ = std::max(1, (options.hot_budget_tokens + m.block_tokens() - 1) /
                                        m.block_tokens());
  }
  return e;
}

Engine::~Engine() {
  // Blocks go back to the pool before the pool and backend go away.
  for (auto& [id, s] : seqs_) FreeBlocks(s);
  seqs_.clear();
  staging_.reset();
  pool_.reset();
  model_.reset();
}

Engine::Sequence& Engine::NewSequence(const SessionId& id) {
  Sequence& s = seqs_[id];
  s.id = id;
  s.plan = plan_;
  s.loader = [this, id](int layer, int32_t chunk, ChunkState* out) {
    return LoadChunk(Seq(id), layer, chunk, out);
  };
  return s;
}

SessionId Engine::CreateSequence() {
  SessionId id = SessionId::Random();
  while (seqs_.count(id)) id = SessionId::Random();
  NewSequence(id);
  return id;
}

absl::Status Engine::CreateSequence(const SessionId& id) {
  if (seqs_.count(id)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id.ToHex(), " exists"));
  }
  NewSequence(id);
  return absl::OkStatus();
}

absl::Status Engine::AdoptSequence(const SessionId& id, std::span<const int32_t> tokens,
                                   int32_t n_chunks, const LayerPlan& plan) {
  const int64_t bt = model_->block_tokens();
  if (n_chunks < 0 || static_cast<int64_t>(n_chunks) * bt > static_cast<int64_t>(tokens.size())) {
    return absl::InvalidArgumentError(absl::StrCat(n_chunks, " checkpointed chunks exceed a ",
                                                   "history of ", tokens.size(), " tokens"));
  }
  if (n_chunks > 0 && plan.size() != config().n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer plan has ", plan.size(), " layers, the model ", config().n_layers));
  }
  RSD_RETURN_IF_ERROR(CreateSequence(id));
  Sequence& s = Seq(id);
  s.tokens.assign(tokens.begin(), tokens.end());
  if (n_chunks > 0) s.plan = plan;
  s.cached = static_cast<int64_t>(n_chunks) * bt;
  s.blocks.assign(static_cast<size_t>(n_chunks), kEvicted);
  for (int32_t c = 0; c < n_chunks; ++c) s.evicted.push_back(c);
  s.resident = false;
  return absl::OkStatus();
}

Engine::Sequence& Engine::Seq(const SessionId& id) {
  auto it = seqs_.find(id);
  RSD_CHECK(it != seqs_.end());
  return it->second;
}

const Engine::Sequence& Engine::Seq(const SessionId& id) const {
  auto it = seqs_.find(id);
  RSD_CHECK(it != seqs_.end());
  return it->second;
}

void Engine::DestroySequence(const SessionId& id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  FreeBlocks(it->second);
  tiers_->EvictSession(id).IgnoreError();  // what cannot be evicted is unreachable anyway
  seqs_.erase(it);
}

void Engine::ReleaseSequence(const SessionId& id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  FreeBlocks(it->second);
  seqs_.erase(it);
}

const std::vector<int32_t>& Engine::SequenceTokens(const SessionId& id) const {
  return Seq(id).tokens;
}
const std::vector<int32_t>& Engine::SequenceBlocks(const SessionId& id) const {
  return Seq(id).blocks;
}

absl::Status Engine::EnsureBlocks(Sequence& s, int64_t n_tokens) {
  const int64_t bt = model_->block_tokens();
  if (bounded()) {
    const int64_t have = static_cast<int64_t>(s.blocks.size());
    const int64_t need = (n_tokens + bt - 1) / bt;
    RSD_RETURN_IF_ERROR(EnforceBudget(s, static_cast<int32_t>(std::max<int64_t>(0, need - have))));
  }
  // The chunk the next token is written into, if it exists, must be the sequence's own.
  const int32_t write_chunk = static_cast<int32_t>(s.cached / bt);
  if (n_tokens > s.cached && write_chunk < static_cast<int32_t>(s.blocks.size())) {
    RSD_RETURN_IF_ERROR(Unshare(s, write_chunk));
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
  for (const Work& w : work) {
    auto it = seqs_.find(w.seq);
    if (it == seqs_.end())
      return absl::NotFoundError(absl::StrCat("unknown sequence ", w.seq.ToHex()));
    if (!it->second.resident) RSD_RETURN_IF_ERROR(Restore(w.seq).status());
  }
  for (size_t i = 0; i < work.size(); ++i) {
    Sequence& s = Seq(work[i].seq);
    RSD_ASSIGN_OR_RETURN(feeds[i], FeedOf(s, work[i]));
    RSD_RETURN_IF_ERROR(EnsureBlocks(s, s.cached + static_cast<int64_t>(feeds[i].size())));
    inputs.push_back(InputOf(s, feeds[i], work[i].all_logits, &tables[i]));
  }
  bool capture = capture_residuals;
  for (const Work& w : work) capture = capture || CapturesResiduals(Seq(w.seq));
  RSD_RETURN_IF_ERROR(model_->Forward(inputs, pool_->view(), capture, out));
  int64_t row0 = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    Sequence& s = Seq(work[i].seq);
    if (CapturesResiduals(s)) {
      RSD_RETURN_IF_ERROR(
          CaptureResiduals(s, s.cached, static_cast<int64_t>(feeds[i].size()), *out, row0));
    }
    row0 += static_cast<int64_t>(feeds[i].size());
    s.tokens.insert(s.tokens.end(), work[i].tokens.begin(), work[i].tokens.end());
    s.cached += static_cast<int64_t>(feeds[i].size());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Engine::FeedOf(const Sequence& s, const Work& w) const {
  const int64_t bt = model_->block_tokens();
  const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
  const int64_t take = w.pending_limit < 0 ? pending : std::min(pending, w.pending_limit);
  if (take < pending && !w.tokens.empty()) {
    return absl::InvalidArgumentError("new tokens cannot follow a partial feed of pending ones");
  }
  std::vector<int32_t> feed(s.tokens.begin() + s.cached, s.tokens.begin() + s.cached + take);
  feed.insert(feed.end(), w.tokens.begin(), w.tokens.end());
  const int64_t end = s.cached + static_cast<int64_t>(feed.size());
  if (end > model_->max_context()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sequence would hold ", end, " tokens; the context is ", model_->max_context()));
  }
  if (bounded() && !feed.empty() && (end - 1) / bt - s.cached / bt + 1 > budget_blocks_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a step of ", feed.size(), " tokens spans more than the hot budget of ", budget_blocks_,
        " blocks; feed at most ", MaxStepTokens(w.seq), " new tokens"));
  }
  return feed;
}

SeqInput Engine::InputOf(Sequence& s, const std::vector<int32_t>& feed, bool all_logits,
                         std::vector<int32_t>* table) {
  const int64_t bt = model_->block_tokens();
  *table = s.blocks;
  int32_t any_hot = 0;
  for (int32_t b : s.blocks) any_hot = b >= 0 ? b : any_hot;
  for (int32_t& b : *table) {
    if (b == kEvicted) b = s.scratch;  // rebuilt into the scratch block when needed
    if (b == kDropped) b = any_hot;    // lossy baselines: skipped by attention
  }
  SeqInput in;
  in.tokens = feed;
  in.start_pos = static_cast<int32_t>(s.cached);
  in.block_table = *table;
  in.all_logits = all_logits;
  in.evicted_chunks = s.evicted;
  in.scratch_block = s.scratch;
  in.loader = &s.loader;
  in.dropped_chunks = s.dropped;
  if (bounded()) {
    const AttentionProbe probe = eviction_->Observe(
        s.eviction,
        EvictionStep{s.cached, static_cast<int64_t>(in.tokens.size()), static_cast<int32_t>(bt)});
    in.attention_mass = probe.mass;
    in.mass_window = probe.window;
  }
  return in;
}

void Engine::AppendPending(const SessionId& id, std::span<const int32_t> tokens) {
  Sequence& s = Seq(id);
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
}

absl::Status Engine::FlushPending(const SessionId& id) {
  ForwardResult fr;
  while (Seq(id).cached < static_cast<int64_t>(Seq(id).tokens.size())) {
    const Sequence& s = Seq(id);
    const int64_t bt = model_->block_tokens();
    int64_t limit = std::min<int64_t>(options_.prefill_chunk,
                                      static_cast<int64_t>(s.tokens.size()) - s.cached);
    if (bounded()) limit = std::min<int64_t>(limit, budget_blocks_ * bt - s.cached % bt);
    Work w{id, {}, false, limit};
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, &fr));
  }
  return absl::OkStatus();
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

absl::StatusOr<GenerateResult> Engine::Generate(const SessionId& id,
                                                std::span<const int32_t> prompt,
                                                const GenerateParams& params,
                                                const std::function<void(int32_t)>& on_token) {
  RSD_RETURN_IF_ERROR(CheckGenerate(id, prompt, params));
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  double t0 = MonotonicSeconds();
  ForwardResult fr;
  RSD_RETURN_IF_ERROR(Prefill(id, prompt, &fr));
  r.prefill_seconds = MonotonicSeconds() - t0;
  std::vector<float> last_logits = fr.logits;
  t0 = MonotonicSeconds();
  TurnDecoder decoder(*tokenizer_, template_->StopTokens(), params);
  while (!decoder.done()) {
    const int64_t position = static_cast<int64_t>(Seq(id).tokens.size());
    const bool last = decoder.Next(last_logits, position);
    const int32_t tok = decoder.tokens().back();
    if (on_token) on_token(tok);
    if (last) {
      Seq(id).tokens.push_back(tok);  // pending: its state is computed when the next turn starts
      break;
    }
    Work w{id, std::span<const int32_t>(&tok, 1), false};
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, &fr));
    last_logits = fr.logits;
  }
  r.tokens = decoder.tokens();
  r.finish_reason = decoder.finish_reason();
  r.logit_hashes = decoder.logit_hashes();
  r.decode_seconds = MonotonicSeconds() - t0;
  r.text = decoder.answer();
  return r;
}

absl::Status Engine::CheckGenerate(const SessionId& id, std::span<const int32_t> prompt,
                                   const GenerateParams& params) const {
  RSD_RETURN_IF_ERROR(ValidateSamplingParams(params.sampling));
  if (params.max_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens must be >= 0, got ",
                                                   params.max_tokens));
  }
  if (!HasSequence(id)) return absl::NotFoundError(absl::StrCat("unknown sequence ", id.ToHex()));
  const Sequence& sq = seqs_.at(id);
  const int64_t history = static_cast<int64_t>(sq.tokens.size());
  const int64_t need = history + static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (need > model_->max_context()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "history (", history, ") + prompt (", prompt.size(), ") + max_tokens (",
        params.max_tokens, ") = ", need, " exceeds the context length ", model_->max_context()));
  }
  if (prompt.empty() && sq.cached == static_cast<int64_t>(sq.tokens.size())) {
    return absl::InvalidArgumentError("nothing to feed: empty prompt and no pending tokens");
  }
  return absl::OkStatus();
}

absl::Status Engine::Prefill(const SessionId& id, std::span<const int32_t> prompt,
                             ForwardResult* fr) {
  size_t off = 0;
  do {
    const int64_t room = MaxStepTokens(id);
    const Sequence& cur = Seq(id);
    const bool pending = cur.cached < static_cast<int64_t>(cur.tokens.size());
    if (room <= 0 && !pending && off < prompt.size()) {
      return absl::InternalError("hot budget leaves no room for a step");
    }
    // room <= 0 with pending tokens: this step feeds only those; the next one has room.
    const size_t n =
        std::min<size_t>({static_cast<size_t>(options_.prefill_chunk), prompt.size() - off,
                          static_cast<size_t>(std::max<int64_t>(room, 0))});
    Work w{id, prompt.subspan(off, n), false};
    RSD_RETURN_IF_ERROR(Step(std::span<const Work>(&w, 1), false, fr));
    off += n;
  } while (off < prompt.size() || Seq(id).cached < static_cast<int64_t>(Seq(id).tokens.size()));
  return absl::OkStatus();
}

}  // namespace rsd
