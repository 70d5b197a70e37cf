// The Llama-family decoder forward pass, written once over the Backend interface (kernels/backend.h).
// Owns the weights in backend memory. Not thread-safe: one compute thread drives it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/transfer_staging.h"
#include "storage/common/state_form.h"
#include "worker/model/model_config.h"
#include "worker/model/model_file.h"

namespace rsd {

struct TransformerOptions {
  int max_context = 0;     // 0: the model's context length
  int block_tokens = 16;   // K/V block size == attention chunk size
};

// The state of one evicted chunk (block) for one layer, from which the forward rebuilds its K/V
// exactly (DESIGN.md sections 1, 4). The loader fills exactly one kind.
struct ChunkState {
  StateForm form = StateForm::kResidual;
  std::vector<KvElement> k, v;  // kKv: [n, kv_dim] each, the F16 bits the pool held
  std::vector<float> h;         // kResidual: [n, d_model], the residual entering the layer
  std::vector<int32_t> tokens;  // kTokens: layer 0 only (its input is the token embedding)
};
// Loads evicted chunk `chunk` of one sequence for `layer`. DATA_LOSS / NOT_FOUND pass through.
using ChunkLoader = std::function<absl::Status(int layer, int32_t chunk, ChunkState* out)>;

// One sequence's share of a forward call.
struct SeqInput {
  std::span<const int32_t> tokens;       // new tokens, at positions start_pos, start_pos + 1, ...
  int32_t start_pos = 0;                 // tokens before it already have K/V in the pool
  std::span<const int32_t> block_table;  // covers positions [0, start_pos + tokens.size())
  bool all_logits = false;               // logits for every new token, else only the last one
  // Bounded sequences: chunks (ascending) whose K/V are not in the pool. Attention rebuilds each,
  // layer by layer, into `scratch_block` (a pool block the caller owns) just before it is needed,
  // so the hot memory used is the sequence's blocks plus this one block. Evicted chunks must be
  // full and must not hold the new tokens.
  std::span<const int32_t> evicted_chunks;
  int32_t scratch_block = -1;
  const ChunkLoader* loader = nullptr;
  // Lossy baselines only (window, StreamingLLM, H2O): chunks (ascending) attention skips
  // entirely. Their block_table entries are ignored. Never set on the exact path.
  std::span<const int32_t> dropped_chunks;
  // H2O: if set, each chunk's share of the softmax mass (summed over layers, heads and the new
  // tokens) is added to (*attention_mass)[chunk]. Reported by the kernel without changing results.
  std::vector<double>* attention_mass = nullptr;
  // SnapKV: only the last `mass_window` new tokens' attention counts (the observation window at
  // the end of a prompt); 0 counts every new token.
  int32_t mass_window = 0;
};

// Chunks rebuilt by the forward, per source, since the last reset (tests prove the path ran).
struct RebuildCounters {
  uint64_t from_kv = 0;
  uint64_t from_residual = 0;
  uint64_t from_tokens = 0;  // layer-0 chunks rebuilt from token ids (embedding)
};

struct ForwardResult {
  // [n_logit_rows, vocab]: per sequence in order, its new tokens' logits (all or the last).
  std::vector<float> logits;
  std::vector<int32_t> logit_seq;  // sequence index of each logit row
  // If capture_residuals: [n_layers, n_rows, d_model], the residual stream entering each layer
  // for each new token (rows in call order). Layer 0's input is the token embedding.
  std::vector<float> residuals;
  int64_t n_rows = 0;
};

// Bytes per token of each exact state form (DESIGN.md section 1), from the stored element sizes.
struct StateBytesPerToken {
  int64_t kv = 0;        // L * 2 * n_kv * head_dim * s_kv (F16: s_kv = 2)
  int64_t residual = 0;  // (L - 1) * d * s_r
  int64_t tokens = 4;
};

class Transformer {
 public:
  // Validates the model against what the engine supports and uploads the weights. `backend`
  // must outlive the Transformer. INVALID_ARGUMENT / RESOURCE_EXHAUSTED name the problem.
  static absl::StatusOr<std::unique_ptr<Transformer>> Create(const ModelFile& file,
                                                             Backend* backend,
                                                             const TransformerOptions& options);
  ~Transformer();

  const ModelConfig& config() const { return config_; }
  int max_context() const { return max_context_; }
  int block_tokens() const { return block_tokens_; }
  int kv_dim() const { return config_.n_kv_heads * config_.head_dim; }
  Backend* backend() const { return backend_; }
  StateBytesPerToken state_bytes_per_token() const;
  // Bytes of the weights as stored on the backend (what one step over all rows must read).
  size_t weight_bytes() const { return weight_bytes_; }
  // Everything that decides bits besides the weights: backend numerics id, dtypes, block size.
  std::string numerics_fingerprint() const;

  // Runs the new tokens of `seqs` as one batch (rows of all sequences in one GEMM per weight),
  // writing their K/V into `pool` at their block tables. INVALID_ARGUMENT on bad positions,
  // token ids or block tables. `out` may hold a previous call's result: its buffers are reused
  // and every field is overwritten.
  absl::Status Forward(std::span<const SeqInput> seqs, const KvPoolView& pool,
                       bool capture_residuals, ForwardResult* out);

  // Recomputes K and V of `layer` from stored residual inputs: h [n, d] at positions pos[n] →
  // k, v [n, kv_dim] (host memory), the F16 bits the pool holds for them. The forward computes
  // its K/V with this same code path.
  absl::Status KvFromResidual(int layer, std::span<const float> h, std::span<const int32_t> pos,
                              KvElement* k, KvElement* v);

  // Rebuilds K/V of `layer` for the block_tokens positions of `chunk` from `state` into pool block
  // `block` (the same code path attention's rebuilds and the forward use). DATA_LOSS if the state
  // has the wrong size. With `staging`, K/V checkpoints travel on the backend's transfer stream
  // (overlapping with compute); the caller fences the transfers before compute that reads them.
  absl::Status RebuildIntoBlock(int layer, int32_t chunk, const ChunkState& state, int32_t block,
                                const KvPoolView& pool, TransferStaging* staging = nullptr);
  // RebuildIntoBlock of several chunks of one layer in one pass (chunks[i] from *states[i] into
  // blocks[i]; at most rebuild_chunks() of them): the residual and token chunks' rows go through
  // the norm, the projections, RoPE and the store together, the same bits as one at a time.
  absl::Status RebuildIntoBlocks(int layer, std::span<const int32_t> chunks,
                                 std::span<const ChunkState* const> states,
                                 std::span<const int32_t> blocks, const KvPoolView& pool,
                                 TransferStaging* staging = nullptr);
  // Chunks one RebuildIntoBlocks call takes (its scratch rows: rebuild_chunks() * block_tokens).
  static constexpr int rebuild_chunks() { return 8; }

  // Tests: overwrite the target block's layer with NaN bytes before every rebuild, so a rebuild
  // that leaves anything unwritten shows.
  void set_poison_rebuilds(bool on) { poison_rebuilds_ = on; }

  const RebuildCounters& rebuild_counters() const { return rebuilds_; }
  void ResetRebuildCounters() { rebuilds_ = RebuildCounters{}; }

 private:
  struct Layer;
  struct Workspace;
  Transformer() = default;
  absl::Status Upload(const ModelFile& file);
  absl::Status BuildRopeTable(const ModelFile& file);
  // Grows the workspace to `rows` rows; RESOURCE_EXHAUSTED (and an empty workspace) if the
  // backend's memory cannot hold it.
  absl::Status EnsureWorkspace(int64_t rows);
  absl::Status AllocateWorkspace(int64_t rows);
  // Checks sequence `s` of a forward call against the context, the pool and the vocabulary;
  // INVALID_ARGUMENT names the sequence and the value.
  absl::Status CheckSeq(size_t s, const SeqInput& in, const KvPoolView& pool) const;
  // Grows the workspace's block tables to `n_tables` entries (the batch's sequences' together).
  absl::Status EnsureTables(int64_t n_tables);
  // Copies the batch's n rows of metadata (token ids, positions, K/V slots, block tables,
  // attention rows) to the workspace and sets table_offsets_, row_seq_, host_rows_ and
  // out->logit_seq. Returns the rows whose logits are wanted, in order.
  absl::StatusOr<std::vector<int64_t>> UploadRows(std::span<const SeqInput> seqs, int64_t n,
                                                  ForwardResult* out);
  // One decoder layer over the batch's n rows: the residual stream ws_->x [n, d_model] in place,
  // the layer's K/V stored into `pool`.
  absl::Status ForwardLayer(int l, std::span<const SeqInput> seqs, const KvPoolView& pool,
                            int64_t n);
  // xn [n, d] (normed input of `layer`) → K, V [n, kv_dim] in workspace, RoPE applied to K; with
  // q, also the queries (RoPE applied), all from one MatMulShared of xn.
  absl::Status ProjectKv(const Layer& layer, const Tensor& xn, const int32_t* pos_dev, Tensor k,
                         Tensor v, Tensor* q = nullptr);
  // Attention of `layer` for the batch, rebuilding evicted chunks into scratch blocks.
  absl::Status AttendLayer(int layer, std::span<const SeqInput> seqs, const Tensor& q,
                           const KvPoolView& pool, Tensor out);
  // The chunk-major part of AttendLayer: hot runs of chunks in one call each, evicted chunks
  // rebuilt and dropped chunks skipped one chunk at a time, merged into `st`.
  absl::Status AttendChunks(int layer, std::span<const SeqInput> seqs, const Tensor& q,
                            const KvPoolView& pool, const AttentionShape& shape, int max_chunks,
                            const AttentionState& st);
  // Adds each chunk's softmax share to the sequences that asked for it (H2O).
  absl::Status AccumulateMass(std::span<const SeqInput> seqs, const AttentionState& st,
                              int64_t n_rows, int max_chunks);
  // Rebuilds K/V of `layer` for evicted chunk `chunk` into block `scratch` of the pool.
  absl::Status RebuildChunk(int layer, int32_t chunk, const SeqInput& in, const KvPoolView& pool);
  // RebuildIntoBlock from a K/V checkpoint: a copy into the block (on `staging` if given).
  absl::Status LoadRebuildRows(int layer, int32_t chunk, const ChunkState& cs, int j, Tensor x);
  absl::Status CopyKvCheckpoint(int layer, int32_t chunk, const ChunkState& cs, int32_t scratch,
                                const KvPoolView& pool, TransferStaging* staging);

  Backend* backend_ = nullptr;
  ModelConfig config_;
  int max_context_ = 0;
  int block_tokens_ = 16;
  std::vector<DevicePtr<void>> allocations_;
  size_t weight_bytes_ = 0;
  Tensor token_embd_, output_, output_norm_;
  std::vector<Layer> layers_;
  RopeTable rope_;
  std::unique_ptr<Workspace> ws_;
  RebuildCounters rebuilds_;
  bool poison_rebuilds_ = false;
  std::vector<int64_t> table_offsets_;  // per sequence of the current call: offset in ws tables
  std::vector<AttentionRow> host_rows_;  // the current call's attention rows (host copy)
  std::vector<int32_t> row_seq_;         // sequence index of each row
};

}  // namespace rsd
