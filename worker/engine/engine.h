// The engine: one model on one backend, its tokenizer and chat template, the hot K/V pool, and
// sequences that feed tokens through the transformer in batches. Not thread-safe: one compute
// thread owns it (the serving layer queues work to that thread).
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
#include "storage/kv_block_pool.h"
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
  // scoring last, the most recent block never).
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
  int32_t peak_hot_blocks = 0;   // most ever held at once (scratch included)
  int32_t evicted_blocks = 0;    // blocks living as checkpoints
  int64_t checkpoint_bytes = 0;  // host bytes of those checkpoints
};

// Host storage for full checkpoint chunks (DESIGN.md section 4: the warm tier, overflowing to
// RocksDB), so that host memory per session is bounded. The engine keeps in its own memory only
// the chunk whose residual rows are still being captured; once a chunk is full, its checkpoints
// (and the K/V copy of a block leaving the pool) go to the store. Without a store (rsd-run
// generate, engine tests) they stay in engine memory.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;
  // One layer of one full chunk of sequence `seq`: K/V [2][bt][kv_dim] if `kv`, else residual
  // [bt][d_model]. The bytes come back exactly.
  virtual absl::Status Put(int32_t seq, int32_t chunk, int layer, bool kv,
                           std::span<const float> data) = 0;
  // NOT_FOUND if absent; DATA_LOSS if it cannot be read back intact.
  virtual absl::StatusOr<std::vector<float>> Get(int32_t seq, int32_t chunk, int layer,
                                                 bool kv) = 0;
  // Chunks >= from_chunk of the sequence are void (a rollback).
  virtual absl::Status Truncate(int32_t seq, int32_t from_chunk) = 0;
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
  // The per-layer form plan (1 = kv) and, for "auto", what it was computed from.
  const std::vector<uint8_t>& layer_plan() const { return plan_; }
  std::string PlanDescription() const;
  // What the "auto" planner measured (0 if it did not run): host bytes per second and seconds to
  // rebuild one chunk of one layer from residuals.
  double planner_bytes_per_second() const { return plan_bw_; }
  double planner_rebuild_seconds() const { return plan_rebuild_; }
  // The plan of one sequence.
  const std::vector<uint8_t>& SequenceLayerPlan(int32_t seq) const { return seqs_.at(seq).layer_kv; }

  // Where full checkpoint chunks go (nullptr: engine memory). Must outlive the sequences.
  void set_checkpoint_store(CheckpointStore* store) { store_ = store; }

  // Sequences: token history plus a block table into the hot pool.
  int32_t CreateSequence();
  void DestroySequence(int32_t seq);  // frees its blocks
  const std::vector<int32_t>& SequenceTokens(int32_t seq) const;
  const std::vector<int32_t>& SequenceBlocks(int32_t seq) const;  // -1: evicted
  SequenceMemory SequenceMemoryUse(int32_t seq) const;
  // Tokens the next Step may feed to `seq` (pending ones included) within its hot budget.
  int64_t MaxStepTokens(int32_t seq) const;
  // Pending tokens the next Step may feed to `seq` within its hot budget and the context.
  int64_t MaxPendingFeed(int32_t seq) const;
  // Tokens of the history without K/V yet (the next Step feeds them first).
  int64_t PendingTokens(int32_t seq) const;
  // The per-sequence hot budget in blocks (0: unbounded).
  int32_t hot_budget_blocks() const { return budget_blocks_; }

  struct Work {
    int32_t seq = 0;
    std::span<const int32_t> tokens;
    bool all_logits = false;
    int64_t pending_limit = -1;  // feed at most this many pending tokens (-1: all); `tokens`
                                 // must then be empty unless every pending token fits
  };

  // Appends tokens to the history without computing them (they are fed by the next Step).
  void AppendPending(int32_t seq, std::span<const int32_t> tokens);
  // Feeds every pending token, in steps that fit the hot budget.
  absl::Status FlushPending(int32_t seq);
  // Drops the history from position `n` on (rollback of a failed turn, undo).
  absl::Status TruncateSequence(int32_t seq, int64_t n);

  // A chunk's exact state for one layer, as a session spills it: kv [2][bt][kv_dim] (from the pool
  // or its checkpoint) or residual [bt][d] (layer >= 1). Only full, computed chunks.
  absl::StatusOr<std::vector<float>> ChunkPayload(int32_t seq, int32_t chunk, int layer,
                                                  bool kv) const;
  // Number of full chunks whose K/V are computed (spillable).
  int32_t FullChunks(int32_t seq) const;
  // Restores a sequence from checkpoints: `tokens` is its history; chunks [0, n_chunks) are
  // given by `load` (layer 0 of the residual form comes from the tokens); the remaining tokens
  // stay pending. The most recent chunks that fit the hot budget (all if unbounded) are rebuilt
  // into hot blocks now; older ones stay evicted and are rebuilt inside attention when needed.
  // `layer_kv[l]`: layer l's checkpoints are K/V (else residual; layer 0 then from tokens).
  absl::StatusOr<int32_t> ImportSequence(std::span<const int32_t> tokens, int32_t n_chunks,
                                         const std::vector<uint8_t>& layer_kv,
                                         const std::function<absl::StatusOr<std::vector<float>>(
                                             int32_t chunk, int layer)>& load);
  // Feeds new tokens of several sequences as one batch; logits per ForwardResult. A sequence's
  // pending tokens (history without K/V yet, e.g. the last sampled token) are fed first, as part
  // of the same call. Blocks are allocated as needed (RESOURCE_EXHAUSTED if the pool is full).
  absl::Status Step(std::span<const Work> work, bool capture_residuals, ForwardResult* out);

  // Feeds `prompt` to `seq` (in chunks), then samples up to max_tokens. `on_token` (optional)
  // sees each generated token as it is produced.
  absl::StatusOr<GenerateResult> Generate(int32_t seq, std::span<const int32_t> prompt,
                                          const GenerateParams& params,
                                          const std::function<void(int32_t)>& on_token = {});

  // Tokens for a raw prompt: BOS if the model wants it, special tokens parsed.
  std::vector<int32_t> EncodePrompt(const std::string& text) const;

 private:
  struct Sequence {
    int32_t id = 0;
    std::vector<int32_t> tokens;  // the whole history
    int64_t cached = 0;           // tokens[0, cached) have K/V; the rest are pending
    std::vector<int32_t> blocks;  // per chunk: pool block id, or -1 once evicted
    std::vector<int32_t> evicted;  // ascending chunk ids
    std::vector<int32_t> dropped;  // lossy baselines: ascending chunk ids attention skips
    // Attention mass per chunk: H2O accumulates it; TOVA keeps the last step's; SnapKV the last
    // prefill's observation window's.
    std::vector<double> mass;
    int32_t mass_chunks = 0;       // SnapKV: chunks [0, mass_chunks) were scored
    int32_t scratch = -1;          // rebuild scratch block, while anything is evicted
    int32_t peak_hot = 0;
    // Checkpoints of evicted and hot chunks, host memory (the warm tier):
    // residual form: [n_layers - 1][block_tokens][d_model] per chunk (layer 0 = token embedding);
    // kv form: [n_layers][2][block_tokens][kv_dim] per chunk, written when the block leaves.
    // Per chunk, per layer: kv [2][bt][kv_dim] or residual [bt][d] (empty: none; layer 0's
    // residual is the token embedding, never stored).
    std::map<int32_t, std::vector<std::vector<float>>> checkpoints;
    std::vector<uint8_t> layer_kv;  // per layer: 1 = K/V checkpoints, 0 = residual
    ChunkLoader loader;
  };
  Engine() = default;
  absl::Status EnsureBlocks(Sequence& s, int64_t n_tokens);
  Sequence& Seq(int32_t id);
  bool bounded() const { return budget_blocks_ > 0; }
  int32_t HotBlocks(const Sequence& s) const;
  // Keeps residual rows of newly processed tokens (residual form) from the forward's capture;
  // chunks that become full go to the checkpoint store.
  absl::Status CaptureResiduals(Sequence& s, int64_t first_pos, int64_t n, const ForwardResult& r,
                                int64_t row0);
  // Moves a full chunk's checkpoints from engine memory to the store (if there is one).
  absl::Status StoreChunk(Sequence& s, int32_t chunk);
  // One layer of a chunk's checkpoint from engine memory or the store; NOT_FOUND if neither.
  absl::StatusOr<std::vector<float>> CheckpointOf(const Sequence& s, int32_t chunk, int layer) const;
  absl::Status RestoreChunkToHot(Sequence& s, int32_t chunk);
  // Evicts the oldest full hot blocks until the sequence's hot blocks plus `incoming` new ones
  // fit the budget.
  absl::Status EnforceBudget(Sequence& s, int32_t incoming);
  absl::Status LoadChunk(const Sequence& s, int layer, int32_t chunk, ChunkState* out) const;

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
  std::map<int32_t, Sequence> seqs_;
  CheckpointStore* store_ = nullptr;
  int32_t next_seq_ = 1;
  int32_t budget_blocks_ = 0;  // 0: unbounded
  bool spill_kv_ = false;
  std::vector<uint8_t> plan_;  // per layer: 1 = kv
  double plan_bw_ = 0, plan_rebuild_ = 0;
  absl::Status PlanLayers();
  bool HasResidualLayers(const Sequence& s) const;
  enum class Evict { kExact, kWindow, kStreaming, kH2O, kTova, kSnapKv } evict_ = Evict::kExact;
};

}  // namespace rsd
