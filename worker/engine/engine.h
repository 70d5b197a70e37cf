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
  int threads = 1;
  std::string isa;                  // "" = best supported; "scalar", "avx2", "avx512" to force
  int max_context = 0;              // 0: the model's
  int block_tokens = 16;
  size_t kv_budget_bytes = 0;       // 0: room for one full context
  int prefill_chunk = 256;          // most tokens of one sequence per forward call
};

struct GenerateParams {
  SamplingParams sampling;
  int max_tokens = 64;
  std::vector<std::string> stop;  // stop strings (matched on the generated text)
  bool stop_at_eos = true;        // end at EOS / end-of-turn tokens
};

struct GenerateResult {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish_reason;  // "eos", "stop", "length"
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t prompt_tokens = 0;
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

  // Sequences: token history plus a block table into the hot pool.
  int32_t CreateSequence();
  void DestroySequence(int32_t seq);  // frees its blocks
  const std::vector<int32_t>& SequenceTokens(int32_t seq) const;
  const std::vector<int32_t>& SequenceBlocks(int32_t seq) const;

  struct Work {
    int32_t seq = 0;
    std::span<const int32_t> tokens;
    bool all_logits = false;
  };
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
    std::vector<int32_t> tokens;  // the whole history
    int64_t cached = 0;           // tokens[0, cached) have K/V in the pool; the rest are pending
    std::vector<int32_t> blocks;
  };
  Engine() = default;
  absl::Status EnsureBlocks(Sequence& s, int64_t n_tokens);
  Sequence& Seq(int32_t id);

  EngineOptions options_;
  std::string model_fingerprint_;
  std::string model_format_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ChatTemplate> template_;
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<KvBlockPool> pool_;
  std::map<int32_t, Sequence> seqs_;
  int32_t next_seq_ = 1;
};

}  // namespace rsd
