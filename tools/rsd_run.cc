// rsd-run: the engine in one process, no network (DESIGN.md section 7).
//   rsd-run info|tokenize|generate|bench --model PATH [flags]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "kernels/cpu/isa.h"
#include "nlohmann/json.hpp"
#include "storage/common/clock.h"
#include "storage/common/flags.h"
#include "storage/common/status.h"
#include "worker/engine/engine.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/session_manager.h"

ABSL_FLAG(std::string, model, "", "model: GGUF file or Hugging Face folder");
ABSL_FLAG(bool, json, false, "print JSON");
ABSL_FLAG(std::string, text, "", "tokenize: the text");
ABSL_FLAG(std::string, prompt, "", "generate: raw prompt text (BOS added as the model wants)");
ABSL_FLAG(std::string, message, "", "generate: one user message through the chat template");
ABSL_FLAG(int, max_tokens, 64, "generate: most tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature (0: greedy)");
ABSL_FLAG(int, top_k, 0, "top-k (0: off)");
ABSL_FLAG(double, top_p, 1.0, "top-p (1: off)");
ABSL_FLAG(uint64_t, seed, 0, "sampling seed");
ABSL_FLAG(std::vector<std::string>, stop, {}, "stop strings (comma separated)");
ABSL_FLAG(std::string, device, "cpu",
          "what computes: cpu, cuda, cuda:N, or cuda-emu (the CUDA backend on the host emulation "
          "of a GPU); the CPU and CUDA backends give the same bits");
ABSL_FLAG(int64_t, device_memory, 0, "bytes of device memory the backend may use (0: no cap)");
ABSL_FLAG(int, threads, 1, "compute threads (CPU backend)");
ABSL_FLAG(std::string, isa, "", "force a CPU ISA path: scalar, avx2, avx512");
ABSL_FLAG(int, max_context, 0, "context limit (0: the model's)");
ABSL_FLAG(int, hot_budget_tokens, 0,
          "per-sequence hot K/V budget in tokens (0: unbounded; rounds up to whole blocks)");
ABSL_FLAG(std::string, spill_form, "residual",
          "form of state leaving the hot pool: residual, kv, auto (per layer, calibrated); "
          "chat also: tokens, none");
ABSL_FLAG(int, block_tokens, 16, "K/V block size (= attention chunk) in tokens");
ABSL_FLAG(double, planner_bytes_per_second, 0,
          "--spill-form auto: tier bandwidth to plan with (0: measure host memcpy)");
ABSL_FLAG(double, planner_rebuild_seconds, 0,
          "--spill-form auto: rebuild time per chunk and layer (0: measure)");
ABSL_FLAG(std::string, evict, "exact",
          "over the hot budget: exact (checkpoints, rebuilt bit for bit) or a lossy baseline: "
          "window, streaming, h2o, tova, snapkv");
ABSL_FLAG(std::string, script, "", "chat: JSON Lines of {\"role\": \"user\", \"content\": ...}");
ABSL_FLAG(std::string, data_dir, "", "chat: sessions persist here (RocksDB)");
ABSL_FLAG(std::string, session, "default", "chat: session name within --data-dir");
ABSL_FLAG(bool, spill_between_turns, true,
          "chat: after each turn the session leaves the hot pool in --spill-form");
ABSL_FLAG(bool, compare_unbounded, false,
          "chat: also run the script unbounded and never spilled, and report the token match");
ABSL_FLAG(int64_t, warm_budget_bytes, 256ll << 20, "chat: warm (host) checkpoint budget");
ABSL_FLAG(std::string, restore_from, "warm",
          "chat: after the between-turn spill, leave checkpoints in the warm tier or demote them "
          "to cold (RocksDB) so the next turn restores from there");
ABSL_FLAG(std::string, threads_list, "1,2", "bench: thread counts to measure (CPU backend)");
ABSL_FLAG(std::string, batch_list, "1", "bench: decode batch sizes (sequences stepping together)");
ABSL_FLAG(bool, bench_restore, false,
          "bench: also time restoring a sequence's K/V from host checkpoints (kv: copies, "
          "residual: rebuilds)");
ABSL_FLAG(int, bench_prompt_tokens, 128, "bench: prompt length for prefill");
ABSL_FLAG(int, bench_decode_tokens, 64, "bench: tokens to decode");
ABSL_FLAG(int, bench_repeats, 3, "bench: repetitions (best is reported)");

namespace rsd {
namespace {

using nlohmann::json;

absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(int threads, size_t kv_budget_bytes = 0) {
  EngineOptions o;
  o.kv_budget_bytes = kv_budget_bytes;
  o.model_path = absl::GetFlag(FLAGS_model);
  if (o.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  o.device = absl::GetFlag(FLAGS_device);
  o.device_memory = static_cast<size_t>(std::max<int64_t>(0, absl::GetFlag(FLAGS_device_memory)));
  o.threads = threads;
  o.isa = absl::GetFlag(FLAGS_isa);
  o.max_context = absl::GetFlag(FLAGS_max_context);
  o.hot_budget_tokens = absl::GetFlag(FLAGS_hot_budget_tokens);
  // "tokens" names the between-turn form; within a turn the residual form serves.
  o.spill_form = absl::GetFlag(FLAGS_spill_form) == "tokens" ? "residual"
                                                             : absl::GetFlag(FLAGS_spill_form);
  o.block_tokens = absl::GetFlag(FLAGS_block_tokens);
  o.evict = absl::GetFlag(FLAGS_evict);
  o.planner_bytes_per_second = absl::GetFlag(FLAGS_planner_bytes_per_second);
  o.planner_rebuild_seconds = absl::GetFlag(FLAGS_planner_rebuild_seconds);
  o.keep_residuals = absl::GetFlag(FLAGS_bench_restore);  // the residual form's checkpoints
  return Engine::Create(o);
}

// JSON text out. Model output is bytes and may be invalid UTF-8 (a token can split a character):
// nlohmann's replace handler turns each invalid sequence into U+FFFD instead of throwing.
std::string Dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

absl::Status Info() {
  RSD_ASSIGN_OR_RETURN(auto engine, MakeEngine(absl::GetFlag(FLAGS_threads)));
  const ModelConfig& c = engine->config();
  const StateBytesPerToken b = engine->model().state_bytes_per_token();
  json j;
  j["model"] = engine->model_path();
  j["format"] = engine->model_format();
  j["architecture"] = c.architecture;
  j["name"] = c.name;
  j["n_layers"] = c.n_layers;
  j["d_model"] = c.d_model;
  j["n_heads"] = c.n_heads;
  j["n_kv_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["d_ff"] = c.d_ff;
  j["vocab_size"] = c.vocab_size;
  j["context_length"] = c.context_length;
  j["rope_theta"] = c.rope_theta;
  j["tied_embeddings"] = c.tied_embeddings;
  j["qkv_bias"] = c.qkv_bias;
  j["tokenizer"] = engine->tokenizer().spec().model;
  j["chat_template"] = engine->chat_template().name();
  j["default_system_prompt"] = engine->chat_template().default_system_prompt();
  j["bytes_per_token"] = {{"kv", b.kv}, {"residual", b.residual}, {"tokens", b.tokens}};
  j["kv_dtype"] = "f32";
  j["residual_dtype"] = "f32";
  j["smaller_form"] = b.residual < b.kv ? "residual" : "kv";
  j["model_fingerprint"] = engine->model_fingerprint();
  j["numerics_fingerprint"] = engine->numerics_fingerprint();
  j["layer_forms"] = engine->PlanDescription();  // per layer: r = residual, k = kv
  j["backend"] = engine->backend().name();
  const DeviceInfo dev = engine->backend().device_info();
  j["device"] = {{"kind", dev.kind},
                 {"name", dev.name},
                 {"index", dev.index},
                 {"memory_total", dev.memory_total},
                 {"memory_limit", dev.memory_limit},
                 {"memory_used", dev.memory_used},
                 {"memory_bandwidth", dev.memory_bandwidth}};
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << Dump(j) << "\n";
  } else {
    std::cout << Dump(j, 2) << "\n";
  }
  return absl::OkStatus();
}

absl::Status Tokenize() {
  RSD_ASSIGN_OR_RETURN(auto engine, MakeEngine(1));
  std::vector<int32_t> ids = engine->tokenizer().Encode(absl::GetFlag(FLAGS_text), true);
  json j;
  j["tokens"] = ids;
  std::cout << Dump(j) << "\n";
  return absl::OkStatus();
}

// The sampling and length flags (generate and chat share them).
GenerateParams ParamsFromFlags() {
  GenerateParams p;
  p.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  p.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  p.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  p.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  p.sampling.seed = absl::GetFlag(FLAGS_seed);
  p.stop = absl::GetFlag(FLAGS_stop);
  return p;
}

// One turn of a chat script through the scheduler, on this thread, as a worker runs it; a turn's
// seed is the script's seed plus its index.
absl::StatusOr<TurnResult> ScriptTurn(Scheduler& scheduler, const SessionId& id,
                                      const std::string& text, const GenerateParams& p,
                                      size_t index) {
  TurnSpec spec;
  spec.id = id;
  spec.user_text = text;
  spec.params = p;
  spec.params.sampling.seed = p.sampling.seed + index;
  return scheduler.RunTurn(std::move(spec));
}

SchedulerOptions CallerDriven() {
  SchedulerOptions o;
  o.own_thread = false;
  return o;
}

absl::Status Generate() {
  RSD_ASSIGN_OR_RETURN(auto engine, MakeEngine(absl::GetFlag(FLAGS_threads)));
  const std::string prompt = absl::GetFlag(FLAGS_prompt), message = absl::GetFlag(FLAGS_message);
  if (prompt.empty() == message.empty()) {
    return absl::InvalidArgumentError("give exactly one of --prompt or --message");
  }
  std::vector<int32_t> ids = !message.empty()
                                 ? engine->chat_template().UserTurn(message, /*first_turn=*/true)
                                 : engine->EncodePrompt(prompt);
  GenerateParams p = ParamsFromFlags();
  SessionId seq = engine->CreateSequence();
  RSD_ASSIGN_OR_RETURN(GenerateResult r, engine->Generate(seq, ids, p));
  json j;
  j["prompt_tokens"] = ids;
  j["tokens"] = r.tokens;
  j["text"] = r.text;
  j["finish_reason"] = r.finish_reason;
  j["prefill_seconds"] = r.prefill_seconds;
  j["decode_seconds"] = r.decode_seconds;
  j["decode_tokens_per_second"] =
      r.decode_seconds > 0 ? static_cast<double>(r.tokens.size()) / r.decode_seconds : 0.0;
  const SequenceMemory mem = engine->SequenceMemoryUse(seq);
  const RebuildCounters& rb = engine->model().rebuild_counters();
  j["memory"] = {{"hot_bytes", static_cast<int64_t>(mem.hot_blocks) *
                                   static_cast<int64_t>(engine->pool().block_bytes())},
                 {"peak_hot_bytes", static_cast<int64_t>(mem.peak_hot_blocks) *
                                        static_cast<int64_t>(engine->pool().block_bytes())},
                 {"evicted_blocks", mem.evicted_blocks},
                 {"checkpoint_bytes", mem.checkpoint_bytes},
                 {"rebuilt_chunks", {{"kv", rb.from_kv}, {"residual", rb.from_residual},
                                     {"tokens", rb.from_tokens}}}};
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << Dump(j) << "\n";
  } else {
    std::cout << Dump(json(r.text)) << "\n";
    std::fprintf(stderr, "[%zu prompt tokens, %zu generated, finish: %s, %.1f tok/s decode]\n",
                 ids.size(), r.tokens.size(), r.finish_reason.c_str(),
                 j["decode_tokens_per_second"].get<double>());
  }
  return absl::OkStatus();
}

int64_t ProcessRssBytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

absl::StatusOr<std::vector<std::string>> ReadScript(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the chat script"));
  std::vector<std::string> turns;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("content") || !j["content"].is_string() ||
        j.value("role", "user") != "user") {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", n, ": expected {\"role\": \"user\", \"content\": \"...\"}"));
    }
    turns.push_back(j["content"].get<std::string>());
  }
  if (turns.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no turns"));
  return turns;
}

// The script run unbounded and never spilled, in a throwaway engine: the reference for
// --compare-unbounded.
absl::StatusOr<std::vector<std::vector<int32_t>>> UnboundedReference(
    const std::vector<std::string>& turns, const GenerateParams& p) {
  EngineOptions o;
  o.model_path = absl::GetFlag(FLAGS_model);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.max_context = absl::GetFlag(FLAGS_max_context);
  o.block_tokens = absl::GetFlag(FLAGS_block_tokens);
  RSD_ASSIGN_OR_RETURN(auto engine, Engine::Create(o));
  RSD_ASSIGN_OR_RETURN(auto sessions, SessionManager::Create(engine.get(), {}));
  RSD_ASSIGN_OR_RETURN(SessionId id, sessions->OpenOrCreate("reference"));
  Scheduler scheduler(engine.get(), sessions.get(), CallerDriven());
  std::vector<std::vector<int32_t>> out;
  for (size_t t = 0; t < turns.size(); ++t) {
    RSD_ASSIGN_OR_RETURN(TurnResult r, ScriptTurn(scheduler, id, turns[t], p, t));
    out.push_back(r.generation.tokens);
  }
  return out;
}

absl::Status Chat() {
  RSD_ASSIGN_OR_RETURN(std::vector<std::string> turns, ReadScript(absl::GetFlag(FLAGS_script)));
  RSD_ASSIGN_OR_RETURN(SpillForm between, ParseSpillForm(absl::GetFlag(FLAGS_spill_form)));
  const std::string restore_from = absl::GetFlag(FLAGS_restore_from);
  if (restore_from != "warm" && restore_from != "cold") {
    return absl::InvalidArgumentError(absl::StrCat("--restore-from '", restore_from,
                                                   "' is not warm or cold"));
  }
  EngineOptions o;
  o.model_path = absl::GetFlag(FLAGS_model);
  if (o.model_path.empty()) return absl::InvalidArgumentError("--model is required");
  o.threads = absl::GetFlag(FLAGS_threads);
  o.isa = absl::GetFlag(FLAGS_isa);
  o.max_context = absl::GetFlag(FLAGS_max_context);
  o.hot_budget_tokens = absl::GetFlag(FLAGS_hot_budget_tokens);
  o.block_tokens = absl::GetFlag(FLAGS_block_tokens);
  o.spill_form = between == SpillForm::kKv     ? "kv"
                 : between == SpillForm::kAuto ? "auto"
                                               : "residual";
  o.keep_residuals = between == SpillForm::kResidual || between == SpillForm::kAuto;
  o.evict = absl::GetFlag(FLAGS_evict);
  RSD_ASSIGN_OR_RETURN(auto engine, Engine::Create(o));
  SessionManagerOptions so;
  so.data_dir = absl::GetFlag(FLAGS_data_dir);
  so.warm_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_warm_budget_bytes));
  RSD_ASSIGN_OR_RETURN(auto sessions, SessionManager::Create(engine.get(), so));
  RSD_ASSIGN_OR_RETURN(SessionId id, sessions->OpenOrCreate(absl::GetFlag(FLAGS_session)));
  GenerateParams p = ParamsFromFlags();
  std::vector<std::vector<int32_t>> reference;
  if (absl::GetFlag(FLAGS_compare_unbounded)) {
    RSD_ASSIGN_OR_RETURN(reference, UnboundedReference(turns, p));
  }
  const size_t block_bytes = engine->pool().block_bytes();
  Scheduler scheduler(engine.get(), sessions.get(), CallerDriven());
  for (size_t t = 0; t < turns.size(); ++t) {
    RSD_ASSIGN_OR_RETURN(TurnResult r, ScriptTurn(scheduler, id, turns[t], p, t));
    RSD_ASSIGN_OR_RETURN(SessionInfo info, sessions->Describe(id));
    json j;
    j["session"] = id.ToHex();
    j["turn"] = r.turn;
    j["tokens"] = r.generation.tokens;
    j["text"] = r.generation.text;
    j["finish_reason"] = r.generation.finish_reason;
    j["token_count"] = info.token_count;
    j["restored_from"] = r.restored_from;
    j["restore_seconds"] = r.restore_seconds;
    j["prefill_seconds"] = r.generation.prefill_seconds;
    j["decode_seconds"] = r.generation.decode_seconds;
    // Memory at the end of the turn, before the between-turn spill.
    j["hot_bytes"] = static_cast<int64_t>(engine->pool().used()) * static_cast<int64_t>(block_bytes);
    if (absl::GetFlag(FLAGS_spill_between_turns)) {
      RSD_RETURN_IF_ERROR(sessions->Spill(id, between));
      if (restore_from == "cold") {
        RSD_RETURN_IF_ERROR(sessions->DemoteToCold(id));
      }
    }
    j["spilled"] = absl::GetFlag(FLAGS_spill_between_turns) ? SpillFormName(between) : "none";
    j["warm_bytes"] = static_cast<int64_t>(sessions->warm_bytes());
    RSD_ASSIGN_OR_RETURN(int64_t cold, sessions->ColdBytes(id));
    j["cold_bytes"] = cold;
    j["rss_bytes"] = ProcessRssBytes();
    if (!reference.empty()) {
      const auto& ref = reference[t];
      size_t same = 0;
      for (size_t i = 0; i < std::min(ref.size(), r.generation.tokens.size()); ++i) {
        same += ref[i] == r.generation.tokens[i];
      }
      const size_t n = std::max(ref.size(), r.generation.tokens.size());
      j["token_match"] = n == 0 ? 1.0 : static_cast<double>(same) / static_cast<double>(n);
    }
    std::cout << Dump(j) << std::endl;
  }
  // On a clean exit the warm tier (process memory) goes to RocksDB, so the next `chat` with this
  // data dir restores from checkpoints; after a crash it rebuilds from the token log.
  if (!so.data_dir.empty()) RSD_RETURN_IF_ERROR(sessions->DemoteToCold(id));
  return absl::OkStatus();
}

// Tokens per second of `batch` sequences decoding together after a prompt each: every step feeds
// one token to each (a fixed id; the sampler is not what is measured).
absl::StatusOr<double> DecodeBatch(Engine& e, const std::vector<int32_t>& prompt, int batch,
                                   int steps) {
  std::vector<SessionId> seqs;
  for (int b = 0; b < batch; ++b) {
    seqs.push_back(e.CreateSequence());
    e.AppendPending(seqs.back(), prompt);
    RSD_RETURN_IF_ERROR(e.FlushPending(seqs.back()));
  }
  const int32_t tok = prompt.back();
  std::vector<Engine::Work> work;
  for (const SessionId& s : seqs)
    work.push_back(Engine::Work{s, std::span<const int32_t>(&tok, 1), false});
  ForwardResult fr;
  RSD_RETURN_IF_ERROR(e.Step(work, false, &fr));  // warm-up (workspace sized once)
  const double t0 = MonotonicSeconds();
  for (int i = 0; i < steps; ++i) RSD_RETURN_IF_ERROR(e.Step(work, false, &fr));
  const double dt = MonotonicSeconds() - t0;
  for (const SessionId& s : seqs) e.DestroySequence(s);
  return batch * steps / dt;
}

// Tokens per second of restoring a sequence from host checkpoints in `form` ("kv": copies into
// the pool; "residual": K/V rebuilt from residuals). The checkpoints are those of a sequence the
// engine computed and spilled, so they are real; each repeat spills it again (untimed).
absl::StatusOr<double> Restore(Engine& e, const std::vector<int32_t>& prompt, bool kv) {
  const SessionId seq = e.CreateSequence();
  e.AppendPending(seq, prompt);
  RSD_RETURN_IF_ERROR(e.FlushPending(seq));
  const int32_t chunks = e.FullChunks(seq);
  const LayerPlan plan =
      LayerPlan::Uniform(e.config().n_layers, kv ? StateForm::kKv : StateForm::kResidual);
  double best = 1e30;
  absl::Status st;
  for (int rep = 0; rep < 3 && st.ok(); ++rep) {
    st = e.Spill(seq, plan);
    if (!st.ok()) break;
    const double t0 = MonotonicSeconds();
    absl::StatusOr<std::string> from = e.Restore(seq);
    st = from.ok() ? e.backend().Synchronize() : from.status();
    best = std::min(best, MonotonicSeconds() - t0);
  }
  e.DestroySequence(seq);
  RSD_RETURN_IF_ERROR(st);
  return chunks * e.model().block_tokens() / best;
}

std::string Limit(double value, double limit) {
  if (limit <= 0) return "";
  return absl::StrFormat(" (%.1f%% of the %.0f tok/s memory-bandwidth limit)",
                         100.0 * value / limit, limit);
}

absl::Status Bench() {
  json rows = json::array();
  std::vector<int> threads_list = {1};
  if (absl::GetFlag(FLAGS_device) == "cpu") {
    threads_list.clear();
    for (absl::string_view t : absl::StrSplit(absl::GetFlag(FLAGS_threads_list), ',')) {
      int threads = 0;
      if (!absl::SimpleAtoi(t, &threads) || threads < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("--threads-list: '", t, "' is not a thread count"));
      }
      threads_list.push_back(threads);
    }
  }
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batch_list), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(b, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batch-list: '", b, "' is not a batch size"));
    }
    batches.push_back(n);
  }
  const int np = absl::GetFlag(FLAGS_bench_prompt_tokens);
  const int nd = absl::GetFlag(FLAGS_bench_decode_tokens);
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  for (int threads : threads_list) {
    size_t pool = 0;  // the default: one context
    if (max_batch > 1) {
      // Every sequence of the largest batch, plus the bench's own: a block of slack each.
      RSD_ASSIGN_OR_RETURN(auto probe, MakeEngine(1, 1));
      const int64_t bt = probe->model().block_tokens();
      const int64_t per_seq =
          (np + nd + 2 + bt) / bt * bt * probe->model().state_bytes_per_token().kv;
      pool = static_cast<size_t>((max_batch + 2) * per_seq);
    }
    RSD_ASSIGN_OR_RETURN(auto engine, MakeEngine(threads, pool));
    // A fixed pseudo-random prompt of ordinary token ids.
    std::vector<int32_t> prompt(np);
    for (int i = 0; i < np; ++i) prompt[i] = 100 + (i * 7919) % (engine->config().vocab_size - 200);
    double best_prefill = 1e30, best_decode = 1e30;
    for (int rep = 0; rep < absl::GetFlag(FLAGS_bench_repeats); ++rep) {
      SessionId seq = engine->CreateSequence();
      GenerateParams p;
      p.max_tokens = nd + 1;
      p.stop_at_eos = false;
      RSD_ASSIGN_OR_RETURN(GenerateResult r, engine->Generate(seq, prompt, p));
      best_prefill = std::min(best_prefill, r.prefill_seconds);
      best_decode = std::min(best_decode, r.decode_seconds);
      engine->DestroySequence(seq);
    }
    const DeviceInfo dev = engine->backend().device_info();
    const double weights = static_cast<double>(engine->model().weight_bytes());
    // Decode reads every weight once per step: the bandwidth bound for one sequence, and for a
    // batch (the rows of a step share each read).
    const double decode_limit = dev.memory_bandwidth > 0 ? dev.memory_bandwidth / weights : 0;
    json row;
    row["threads"] = threads;
    row["backend"] = engine->backend().name();
    row["device"] = {
        {"kind", dev.kind}, {"name", dev.name}, {"memory_bandwidth", dev.memory_bandwidth}};
    row["weight_bytes"] = engine->model().weight_bytes();
    row["prompt_tokens"] = np;
    row["decode_tokens"] = nd;
    row["prefill_tokens_per_second"] = np / best_prefill;
    row["decode_tokens_per_second"] = nd / best_decode;
    row["decode_limit_tokens_per_second"] = decode_limit;
    const std::string name = engine->backend().name();
    if (!absl::GetFlag(FLAGS_json)) {
      std::printf(
          "threads=%d backend=%s prefill %.1f tok/s (%d tokens)  decode %.1f tok/s (%d "
          "tokens)%s\n",
          threads, name.c_str(), np / best_prefill, np, nd / best_decode, nd,
          Limit(nd / best_decode, decode_limit).c_str());
    }
    json by_batch = json::object();
    for (int b : batches) {
      if (b == 1) continue;
      RSD_ASSIGN_OR_RETURN(double tps, DecodeBatch(*engine, prompt, b, nd));
      by_batch[std::to_string(b)] = tps;
      if (!absl::GetFlag(FLAGS_json)) {
        std::printf("  decode at batch %d: %.1f tok/s%s\n", b, tps,
                    Limit(tps, decode_limit * b).c_str());
      }
    }
    row["decode_batch_tokens_per_second"] = by_batch;
    if (absl::GetFlag(FLAGS_bench_restore)) {
      const StateBytesPerToken bpt = engine->model().state_bytes_per_token();
      for (bool kv : {true, false}) {
        RSD_ASSIGN_OR_RETURN(double tps, Restore(*engine, prompt, kv));
        const char* form = kv ? "kv" : "residual";
        row["restore_tokens_per_second"][form] = tps;
        if (!absl::GetFlag(FLAGS_json)) {
          std::printf("  restore from host checkpoints (%s, %lld B/token): %.1f tok/s\n", form,
                      static_cast<long long>(kv ? bpt.kv : bpt.residual), tps);
        }
      }
    }
    rows.push_back(row);
  }
  if (absl::GetFlag(FLAGS_json)) std::cout << Dump(rows) << "\n";
  return absl::OkStatus();
}

}  // namespace
}  // namespace rsd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "rsd-run <info|tokenize|generate|bench> --model PATH [flags]\n"
      "  info      architecture, bytes per token of each state form, fingerprints\n"
      "  tokenize  --text T: token ids (special tokens parsed, no BOS)\n"
      "  generate  --prompt T | --message T [--max-tokens N --temperature X --seed N ...]\n"
      "  chat      --script FILE [--data-dir DIR --session NAME --hot-budget-tokens N\n"
      "            --spill-form residual|kv|tokens|none --compare-unbounded]: one JSON line a turn\n"
      "  bench     prefill and decode tokens/s for --threads-list");
  std::vector<char*> args = rsd::ParseDashedCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  const std::string cmd = args[1];
  absl::Status s;
  if (cmd == "info") {
    s = rsd::Info();
  } else if (cmd == "tokenize") {
    s = rsd::Tokenize();
  } else if (cmd == "generate") {
    s = rsd::Generate();
  } else if (cmd == "chat") {
    s = rsd::Chat();
  } else if (cmd == "bench") {
    s = rsd::Bench();
  } else {
    std::fprintf(stderr, "rsd-run: unknown command '%s'\n%s\n", cmd.c_str(),
                 absl::ProgramUsageMessage().data());
    return 2;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "rsd-run %s: %s: %s\n", cmd.c_str(),
                 absl::StatusCodeToString(s.code()).c_str(), std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
