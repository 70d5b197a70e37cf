// The engine: one model on one backend, its tokenizer and chat template, the hot K/V pool, and
// the state of every session, owned once: a sequence per session id holds its token history and
// where each chunk's state lives (a hot block, a checkpoint in the tier chain below the pool, or
// nothing: the tokens rebuild it). Sequences feed tokens through the transformer in batches. Not
// thread-safe: one compute thread owns it (the serving layer queues work to that thread).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/transfer_staging.h"
#include "storage/common/ids.h"
#include "storage/common/state_form.h"
#include "storage/kv_block_pool.h"
#include "storage/session_state.h"
#include "storage/state_codec.h"
#include "storage/tier_chain.h"
#include "worker/engine/eviction.h"
#include "worker/engine/sampler.h"
#include "worker/model/chat_template.h"
#include "worker/model/tokenizer.h"
#include "worker/model/transformer.h"

namespace rsd {

struct EngineOptions {
  std::string model_path;
  // What computes: "cpu", "cuda", "cuda:N" or "cuda-emu" (kernels/backend_factory.h). The CPU
  // and CUDA backends give the same bits (one numerics fingerprint).
  std::string device = "cpu";
  size_t device_memory = 0;         // bytes of device memory the backend may use (0: no cap)
  int threads = 1;                  // CPU backend
  std::string isa;                  // CPU backend: "" = best; "scalar", "avx2", "avx512" to force
  int max_context = 0;              // 0: the model's
  int block_tokens = 16;
  size_t kv_budget_bytes = 0;       // 0: room for one full context
  int prefill_chunk = 256;          // most tokens of one sequence per forward call
  // Per-sequence hot budget in tokens (0: unbounded); rounded up to whole blocks, at least one.
  // Over it, a sequence's oldest full blocks leave the pool as checkpoints in `spill_form` and
  // attention rebuilds them chunk by chunk into one scratch block (DESIGN.md section 4).
  int hot_budget_tokens = 0;
  // "residual", "kv", or "auto": per layer, the form whose restore is fastest given the measured
  // host bandwidth and rebuild compute (calibrated at start; layer 0's residual form is the token
  // embedding). `layer_forms` overrides the plan: one letter per layer, 'r' or 'k'.
  std::string spill_form = "residual";
  std::string layer_forms;
  double planner_bytes_per_second = 0;  // 0: measure (memcpy bandwidth)
  double planner_rebuild_seconds = 0;   // per chunk-layer; 0: measure
  // Tests: overwrite blocks with NaN bytes when they leave the pool and before every rebuild into
  // a block, so a stale or unwritten read shows.
  bool poison_freed_blocks = false;
  // Capture every processed token's residuals (layers 1..L-1) even when unbounded: sessions
  // that may spill between turns in the residual form need them (they cannot be derived later).
  bool keep_residuals = false;
  // What leaves the pool over the hot budget: "exact" (checkpoints, rebuilt bit for bit) or a
  // lossy baseline for comparison: "window" (drop the oldest blocks), "streaming" (StreamingLLM:
  // keep the first block as attention sinks plus the most recent ones), "h2o" (Heavy-Hitter
  // Oracle: keep the most recent block and the blocks with the most accumulated attention mass) or
  // "tova" (Token Omission Via Attention, by block: drop the block the latest step's queries
  // attended to least, its mass summed over layers and heads, sparing the most recent block) or
  // "snapkv" (by block: each prefill step scores the blocks by the attention of its last block's
  // worth of tokens, the observation window; the lowest-scored go first, blocks written after the
  // scoring last, the most recent block never). The policies live in worker/engine/eviction.h.
  std::string evict = "exact";
};

struct GenerateParams {
  SamplingParams sampling;
  int max_tokens = 64;
  std::vector<std::string> stop;  // stop strings (matched on the generated text)
  bool stop_at_eos = true;        // end at EOS / end-of-turn tokens
  bool record_logit_hashes = false;  // GenerateResult::logit_hashes
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;  // "eos", "stop", "length"
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t prompt_tokens = 0;
  // XXH3-64 of the logits each sampled token was drawn from (if record_logit_hashes).
  std::vector<uint64_t> logit_hashes;
};

// What the hot tier did for one sequence (tests and rsd-run report it).
struct SequenceMemory {
  int32_t hot_blocks = 0;        // pool blocks held now (scratch included)
  int32_t shared_blocks = 0;     // of those, blocks other sequences hold too
  int32_t peak_hot_blocks = 0;   // most ever held at once (scratch included)
  int32_t evicted_blocks = 0;    // blocks living as checkpoints
  int64_t checkpoint_bytes = 0;  // bytes of its checkpoints, in the tiers and in engine memory
};

class Engine {
 public:
  // Loads the model (GGUF file or HF folder) and sets everything up. Errors name the model path.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const { return model_->config(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ChatTemplate& chat_template() const { return *template_; }
  Transformer& model() { return *model_; }
  Backend& backend() { return *backend_; }
  KvBlockPool& pool() { return *pool_; }
  const std::string& model_fingerprint() const { return model_fingerprint_; }
  std::string numerics_fingerprint() const { return model_->numerics_fingerprint(); }
  const std::string& model_path() const { return options_.model_path; }
  const std::string& model_format() const { return model_format_; }
  // The per-layer form plan and, for "auto", what it was computed from.
  const LayerPlan& layer_plan() const { return plan_; }
  std::string PlanDescription() const;
  // What the "auto" planner measured (0 if it did not run): host bytes per second and seconds to
  // rebuild one chunk of one layer from residuals.
  double planner_bytes_per_second() const { return plan_bw_; }
  double planner_rebuild_seconds() const { return plan_rebuild_; }

  // The tiers checkpoints go to (warm over cold, from the session manager). Without one the engine
  // keeps them in an unbounded tier of its own. Set before any sequence exists; must outlive them.
  void set_tiers(TierChain* tiers) { tiers_ = tiers != nullptr ? tiers : &own_tiers_; }
  TierChain& tiers() { return *tiers_; }
  // What this engine is to a session's state (fingerprints, block size, row sizes, plan).
  const StateLayout& state_layout() const { return layout_; }

  // ---- Sequences: one per session id ----
  // A new, empty sequence under a fresh random id / under `id` (ALREADY_EXISTS if present).
  SessionId CreateSequence();
  absl::Status CreateSequence(const SessionId& id);
  // A sequence whose first `n_chunks` chunks are checkpoints already in the tiers, each layer in
  // `plan`'s form (a session recovered after a restart, or received from another worker); the rest
  // of `tokens` is pending. It is not resident: Restore (or the next Step) brings it in.
  // INVALID_ARGUMENT if the chunks exceed the tokens or the plan has the wrong size.
  absl::Status AdoptSequence(const SessionId& id, std::span<const int32_t> tokens, int32_t n_chunks,
                             const LayerPlan& plan);
  // A new, resident sequence `id` (none may exist) whose first `n_chunks` chunks are resident
  // sequence `donor`'s own hot blocks, shared (prefix reuse: a chunk's state is a function of the
  // tokens through it, so the blocks are, bit for bit, what a prefill would compute). The donor
  // must hold them in the pool and its tokens must start with `tokens`. A shared block is
  // read-only: a sequence that writes into one (only after a rollback into it) first gets its own
  // copy. Where the donor keeps residual checkpoints, the new sequence gets copies of those of the
  // shared chunks in the tiers (it could not derive them later; shared, not copied, where the top
  // tier holds them). Returns the checkpoint bytes copied; FAILED_PRECONDITION with a lossy
  // eviction policy; on an error nothing is left of `id`.
  absl::StatusOr<int64_t> SharePrefixOf(const SessionId& id, const SessionId& donor,
                                        std::span<const int32_t> tokens, int32_t n_chunks);
  // The same from a donor that is not in the pool (spilled): a new sequence `id` (none may exist)
  // whose first `n_chunks` chunks are the donor's checkpoints (aliases in the warm tier, copies
  // from RocksDB), in the donor's plan, not resident: Restore rebuilds them (a projection or a
  // copy, far less than a prefill). The donor's tokens must start with `tokens`. Returns the bytes
  // copied; on an error nothing is left of `id`.
  absl::StatusOr<int64_t> AdoptCheckpointsOf(const SessionId& id, const SessionId& donor,
                                             std::span<const int32_t> tokens, int32_t n_chunks);
  // For a sequence `id` about to be adopted (none may exist; deduplicated migration and failover):
  // the checkpoints of its first `n_chunks` chunks in `plan`'s forms, taken from sequence `donor`,
  // whose first chunks must be `tokens` and be all in the pool or all checkpointed (aliases of the
  // donor's checkpoints where it has them in that form, copies from its hot blocks or captured
  // residuals otherwise). Returns the bytes copied; FAILED_PRECONDITION if the donor has no copy
  // in a form the plan asks for (a residual it did not keep); on an error none are left.
  absl::StatusOr<int64_t> CopyPrefixCheckpoints(const SessionId& id, const SessionId& donor,
                                                std::span<const int32_t> tokens, int32_t n_chunks,
                                                const LayerPlan& plan);
  // Whether CopyPrefixCheckpoints can take `plan`'s forms from `donor` (its leading chunks all in
  // the pool, if it is resident, or all checkpointed).
  bool GivesPrefixIn(const SessionId& donor, const LayerPlan& plan) const;
  bool HasSequence(const SessionId& id) const { return seqs_.count(id) != 0; }
  // Frees its blocks and drops its checkpoints from the tiers.
  void DestroySequence(const SessionId& id);
  // Frees its blocks and forgets it, leaving its checkpoints in the tiers (a clean shutdown: a
  // restarted process adopts them again).
  void ReleaseSequence(const SessionId& id);
  const std::vector<int32_t>& SequenceTokens(const SessionId& id) const;
  const std::vector<int32_t>& SequenceBlocks(const SessionId& id) const;  // -1: evicted
  SequenceMemory SequenceMemoryUse(const SessionId& id) const;
  const LayerPlan& SequenceLayerPlan(const SessionId& id) const { return Seq(id).plan; }
  // Whether the sequence is in the hot pool (it can be computed on without a Restore).
  bool Resident(const SessionId& id) const { return Seq(id).resident; }
  // Tokens the next Step may feed to `seq` (pending ones included) within its hot budget.
  int64_t MaxStepTokens(const SessionId& id) const;
  // Pending tokens the next Step may feed to `seq` within its hot budget and the context.
  int64_t MaxPendingFeed(const SessionId& id) const;
  // Tokens of the history without state yet (the next Step feeds them first).
  int64_t PendingTokens(const SessionId& id) const;
  // The per-sequence hot budget in blocks (0: unbounded).
  int32_t hot_budget_blocks() const { return budget_blocks_; }
  // Number of full chunks whose state is computed (spillable).
  int32_t FullChunks(const SessionId& id) const;
  // Whether the next token goes into a block other sequences share (its write copies it first:
  // one more pool block).
  bool WritesIntoSharedBlock(const SessionId& id) const;

  // ---- State between the pool and the tiers ----
  // Moves the sequence out of the hot pool as checkpoints of every full chunk, each layer in
  // `plan`'s form (written to the tiers where they lack them); the tokens of a partial last chunk
  // become pending. FAILED_PRECONDITION if a layer's checkpoints in that form cannot be had
  // (residuals that were not kept; a K/V copy of a chunk that lives only as a residual checkpoint).
  absl::Status Spill(const SessionId& id, const LayerPlan& plan);
  // Drops the sequence's state (hot blocks and checkpoints): its tokens rebuild it, all pending.
  absl::Status DropState(const SessionId& id);
  // Brings a sequence that is not resident into the pool: its most recent checkpointed chunks that
  // fit the hot budget (all if unbounded) are rebuilt into hot blocks now, older ones stay
  // checkpoints rebuilt inside attention. Returns where its state came from: "warm" or "cold" (the
  // lowest tier read), "tokens" (nothing checkpointed: a re-prefill), "new" (no history), "hot"
  // (it was resident). DATA_LOSS if a checkpoint cannot be read back intact; RESOURCE_EXHAUSTED if
  // the pool has no room. Nothing changes on an error.
  // With `donor` (a resident sequence whose first `donor_chunks` whole chunks are this one's, in
  // the pool): those chunks become the donor's blocks, shared, instead of being rebuilt (a chunk's
  // state is a function of its tokens: the same bits). Skipped where the donor does not hold them
  // (tokens compared), the eviction policy is lossy, or the sequence is bounded.
  absl::StatusOr<std::string> Restore(const SessionId& id, const SessionId* donor = nullptr,
                                      int32_t donor_chunks = 0);
  // A chunk's exact state for one layer as a spill stores it (the codec payload): kv
  // [2][bt][kv_dim] F16 (from the pool or its checkpoint) or residual [bt][d] F32 (layer >= 1).
  // Only full, computed chunks.
  absl::StatusOr<std::vector<uint8_t>> ChunkPayload(const SessionId& id, int32_t chunk, int layer,
                                                    bool kv);

  // ---- Feeding tokens ----
  struct Work {
    SessionId seq;
    std::span<const int32_t> tokens;
    bool all_logits = false;
    int64_t pending_limit = -1;  // feed at most this many pending tokens (-1: all); `tokens`
                                 // must then be empty unless every pending token fits
  };

  // Appends tokens to the history without computing them (they are fed by the next Step).
  void AppendPending(const SessionId& id, std::span<const int32_t> tokens);
  // Feeds every pending token, in steps that fit the hot budget.
  absl::Status FlushPending(const SessionId& id);
  // Drops the history from position `n` on (rollback of a failed turn, undo): blocks,
  // checkpoints and residual rows past it go; the chunk now holding the end stays exact.
  absl::Status TruncateSequence(const SessionId& id, int64_t n);
  // Feeds new tokens of several sequences as one batch; logits per ForwardResult. A sequence's
  // pending tokens (history without state yet, e.g. the last sampled token) are fed first, as part
  // of the same call. Blocks are allocated as needed (RESOURCE_EXHAUSTED if the pool is full). A
  // sequence that is not resident is restored first.
  absl::Status Step(std::span<const Work> work, bool capture_residuals, ForwardResult* out);

  // Feeds `prompt` to `seq` (in chunks), then samples up to max_tokens. `on_token` (optional)
  // sees each generated token as it is produced.
  absl::StatusOr<GenerateResult> Generate(const SessionId& id, std::span<const int32_t> prompt,
                                          const GenerateParams& params,
                                          const std::function<void(int32_t)>& on_token = {});

  // Tokens for a raw prompt: BOS if the model wants it, special tokens parsed.
  std::vector<int32_t> EncodePrompt(const std::string& text) const;

 private:
  static constexpr int32_t kEvicted = -1;  // blocks[c]: a checkpoint in the tiers
  static constexpr int32_t kDropped = -2;  // blocks[c]: gone (lossy baselines only)
  struct Sequence {
    SessionId id;
    std::vector<int32_t> tokens;  // the whole history
    int64_t cached = 0;           // tokens[0, cached) have state; the rest are pending
    bool resident = true;         // in the pool (Spill, DropState and AdoptSequence clear it)
    std::vector<int32_t> blocks;  // per chunk: pool block id, kEvicted or kDropped
    std::vector<int32_t> evicted;  // ascending chunk ids
    std::vector<int32_t> dropped;  // lossy baselines: ascending chunk ids attention skips
    EvictionState eviction;        // the eviction policy's statistics (lossy baselines)
    int32_t scratch = -1;     // rebuild scratch block, while anything is evicted
    int32_t peak_hot = 0;
    LayerPlan plan;  // per layer, the form of its checkpoints
    // The chunk whose residual rows are being captured, before it is full and goes to the tiers:
    // per layer [block_tokens][d_model] (empty for kv layers and layer 0).
    int32_t partial_chunk = -1;
    std::vector<std::vector<float>> partial;
    ChunkLoader loader;
  };
  Engine() = default;
  Sequence& Seq(const SessionId& id);
  const Sequence& Seq(const SessionId& id) const;
  Sequence& NewSequence(const SessionId& id);
  absl::Status EnsureBlocks(Sequence& s, int64_t n_tokens);
  // A donor's first `n_chunks` whole chunks are `tokens`, and they are in the pool (a resident
  // donor) or checkpointed (one that is not): INVALID_ARGUMENT / FAILED_PRECONDITION otherwise.
  absl::Status CheckPrefixOf(const Sequence& donor, std::span<const int32_t> tokens,
                             int32_t n_chunks) const;
  // The donor's checkpoints of its first `n_chunks` chunks (its plan's layers; only the residual
  // ones with `residual_only`) under `id` too, aliased where the top tier can; the bytes copied.
  absl::StatusOr<int64_t> AliasCheckpoints(const Sequence& donor, const SessionId& id,
                                           int32_t n_chunks, bool residual_only);
  // How one layer of a donor's chunk (`hot`: in the pool) reaches a sequence that adopts it in the
  // K/V form (`kv`) or residual: an alias of the donor's checkpoint, its hot K/V copied, or not at
  // all (a residual it did not keep, or a checkpoint in the other form).
  enum class PrefixCopy { kAlias, kPayload, kNone };
  PrefixCopy PrefixCopyOf(const Sequence& donor, bool hot, int layer, bool kv) const;
  // Restore's sharing: the donor's blocks for the sequence's first `n` evicted chunks (retained);
  // returns the chunks shared (0 where it does not apply).
  int32_t ShareForRestore(Sequence& s, const SessionId& donor, int32_t n);
  // Gives the sequence its own copy of chunk `chunk`'s block if others share it (copy on write).
  absl::Status Unshare(Sequence& s, int32_t chunk);
  bool bounded() const { return budget_blocks_ > 0; }
  int32_t HotBlocks(const Sequence& s) const;
  // Whether the forward must capture the sequence's residual rows (its plan keeps some).
  bool CapturesResiduals(const Sequence& s) const { return CapturesResidualsFor(s.plan); }
  // Whether a sequence with `plan` keeps residual checkpoints as its tokens are computed.
  bool CapturesResidualsFor(const LayerPlan& plan) const;
  // Keeps residual rows of newly processed tokens from the forward's capture; a chunk that
  // becomes full goes to the tiers.
  absl::Status CaptureResiduals(Sequence& s, int64_t first_pos, int64_t n, const ForwardResult& r,
                                int64_t row0);
  absl::Status OffloadPartial(Sequence& s);
  // Encodes one layer of a chunk of sequence `id` in `form` and offloads it to the tiers.
  absl::Status OffloadCheckpoint(const SessionId& id, int32_t chunk, int layer, StateForm form,
                                 std::span<const uint8_t> payload);
  // One layer of a chunk's checkpoint payload in the sequence's plan form, from the tiers (decoded,
  // its header checked); `from` gets the tier's name. NOT_FOUND if absent; DATA_LOSS if unreadable
  // or not describing that place.
  absl::StatusOr<std::vector<uint8_t>> Checkpoint(const Sequence& s, int32_t chunk, int layer,
                                                  const char** from = nullptr) const;
  absl::Status RestoreChunkToHot(Sequence& s, int32_t chunk);
  // Several chunks at once (at most the model's rebuild_chunks()): all or none come back.
  absl::Status RestoreChunksToHot(Sequence& s, std::span<const int32_t> chunks);
  // Evicts the eviction policy's victims (checkpointed if it is exact, else dropped) until the
  // sequence's hot blocks plus `incoming` new ones fit the budget.
  absl::Status EnforceBudget(Sequence& s, int32_t incoming);
  // Step's pieces: the tokens a work item feeds now (its checks: a partial feed, the context, the
  // hot budget), and the forward's input for it (block table with evicted and dropped chunks
  // mapped, the eviction policy's probe). `table` keeps the block table alive for the forward.
  absl::StatusOr<std::vector<int32_t>> FeedOf(const Sequence& s, const Work& w) const;
  // Generate's pieces: its argument checks, and feeding the prompt (and pending tokens) in steps
  // that fit the hot budget; `fr` holds the last step's logits.
  absl::Status CheckGenerate(const SessionId& id, std::span<const int32_t> prompt,
                             const GenerateParams& params) const;
  absl::Status Prefill(const SessionId& id, std::span<const int32_t> prompt, ForwardResult* fr);
  SeqInput InputOf(Sequence& s, const std::vector<int32_t>& feed, bool all_logits,
                   std::vector<int32_t>* table);
  // Its K/V layers go to the tiers (its residual layers are there already), then its block is free.
  absl::Status EvictChunk(Sequence& s, int32_t chunk);
  absl::Status LoadChunk(const Sequence& s, int layer, int32_t chunk, ChunkState* out) const;
  // Frees the sequence's hot blocks and scratch (its tokens and checkpoints stay).
  void FreeBlocks(Sequence& s);
  // Chooses the per-layer plan (ChoosePlan), then fixes the state layout it is part of.
  absl::Status PlanLayers();
  absl::Status ChoosePlan();

  EngineOptions options_;
  std::string model_fingerprint_;
  std::string model_format_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> template_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<KvBlockPool> pool_;
  // Pinned (on CUDA) host memory through which spills and restores travel on the transfer stream.
  std::unique_ptr<TransferStaging> staging_;
  std::map<SessionId, Sequence> seqs_;
  TierChain own_tiers_;  // an unbounded tier in engine memory, used when none is set
  TierChain* tiers_ = &own_tiers_;
  int32_t budget_blocks_ = 0;  // 0: unbounded
  LayerPlan plan_;
  StateLayout layout_;
  double plan_bw_ = 0, plan_rebuild_ = 0;
  std::unique_ptr<EvictionPolicy> eviction_;  // what leaves the pool over the hot budget
};

}  // namespace rsd
