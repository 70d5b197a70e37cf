// rsd-run: the engine in one process, no network (DESIGN.md section 7).
//   rsd-run info|tokenize|generate|bench --model PATH [flags]
#include "tools/rsd_run.h"

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
#include "tools/chat_script.h"
#include "worker/engine/engine.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/session_manager.h"
#include "worker/engine/turn_decoder.h"

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
ABSL_FLAG(std::string, isa, "", "force a CPU ISA path: scalar, avx2, avx512, avx512vnni, amx");
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

absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(int threads, size_t kv_budget_bytes) {
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

std::string Dump(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

namespace {

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
  j["kv_dtype"] = "f16";  // the hot pool's element (kernels/tensor.h)
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
  spec.input.user_text = text;
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
  // On a terminal the text streams as it is generated (never splitting a character). With stop
  // strings it is printed whole at the end, since a stop string must not be shown.
  const bool stream = !absl::GetFlag(FLAGS_json) && isatty(STDOUT_FILENO) && p.stop.empty();
  const std::vector<int32_t> stop_ids = engine->chat_template().StopTokens();
  std::vector<int32_t> shown;
  Utf8Stream text_stream;
  auto on_token = [&](int32_t tok) {
    if (!stream || std::find(stop_ids.begin(), stop_ids.end(), tok) != stop_ids.end()) return;
    shown.push_back(tok);
    const std::string piece = text_stream.Take(engine->tokenizer().Decode(shown, false));
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  RSD_ASSIGN_OR_RETURN(GenerateResult r, engine->Generate(seq, ids, p, on_token));
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
  } else if (stream) {
    std::cout << text_stream.Finish(engine->tokenizer().Decode(shown, false)) << "\n";
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

absl::StatusOr<EngineOptions> ChatEngineOptions(SpillForm between) {
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
  return o;
}

// The share of positions where `got` equals `ref` (over the longer of the two).
double TokenMatch(const std::vector<int32_t>& ref, const std::vector<int32_t>& got) {
  size_t same = 0;
  for (size_t i = 0; i < std::min(ref.size(), got.size()); ++i) same += ref[i] == got[i];
  const size_t n = std::max(ref.size(), got.size());
  return n == 0 ? 1.0 : static_cast<double>(same) / static_cast<double>(n);
}

// A turn's line before the between-turn spill: tokens, text, timings, hot bytes.
json TurnJson(const SessionId& id, const TurnResult& r, const SessionInfo& info, Engine& engine) {
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
  j["hot_bytes"] = static_cast<int64_t>(engine.pool().used()) *
                   static_cast<int64_t>(engine.pool().block_bytes());
  return j;
}

absl::Status Chat() {
  RSD_ASSIGN_OR_RETURN(std::vector<std::string> turns, ReadChatScript(absl::GetFlag(FLAGS_script)));
  RSD_ASSIGN_OR_RETURN(SpillForm between, ParseSpillForm(absl::GetFlag(FLAGS_spill_form)));
  const std::string restore_from = absl::GetFlag(FLAGS_restore_from);
  if (restore_from != "warm" && restore_from != "cold") {
    return absl::InvalidArgumentError(
        absl::StrCat("--restore-from '", restore_from, "' is not warm or cold"));
  }
  RSD_ASSIGN_OR_RETURN(EngineOptions o, ChatEngineOptions(between));
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
  const bool spill = absl::GetFlag(FLAGS_spill_between_turns);
  Scheduler scheduler(engine.get(), sessions.get(), CallerDriven());
  for (size_t t = 0; t < turns.size(); ++t) {
    RSD_ASSIGN_OR_RETURN(TurnResult r, ScriptTurn(scheduler, id, turns[t], p, t));
    RSD_ASSIGN_OR_RETURN(SessionInfo info, sessions->Describe(id));
    // Memory at the end of the turn, before the between-turn spill.
    json j = TurnJson(id, r, info, *engine);
    if (spill) {
      RSD_RETURN_IF_ERROR(sessions->Spill(id, between));
      if (restore_from == "cold") RSD_RETURN_IF_ERROR(sessions->DemoteToCold(id));
    }
    j["spilled"] = spill ? SpillFormName(between) : "none";
    j["warm_bytes"] = static_cast<int64_t>(sessions->warm_bytes());
    RSD_ASSIGN_OR_RETURN(int64_t cold, sessions->ColdBytes(id));
    j["cold_bytes"] = cold;
    j["rss_bytes"] = ProcessRssBytes();
    if (!reference.empty()) j["token_match"] = TokenMatch(reference[t], r.generation.tokens);
    std::cout << Dump(j) << std::endl;
  }
  // On a clean exit the warm tier (process memory) goes to RocksDB, so the next `chat` with this
  // data dir restores from checkpoints; after a crash it rebuilds from the token log.
  if (!so.data_dir.empty()) RSD_RETURN_IF_ERROR(sessions->DemoteToCold(id));
  return absl::OkStatus();
}

}  // namespace
}  // namespace rsd

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "rsd-run <info|tokenize|generate|chat|bench|prefix-bench> --model PATH [flags]\n"
      "  info      architecture, bytes per token of each state form, fingerprints\n"
      "  tokenize  --text T: token ids (special tokens parsed, no BOS)\n"
      "  generate  --prompt T | --message T [--max-tokens N --temperature X --seed N ...]\n"
      "  chat      --script FILE [--data-dir DIR --session NAME --hot-budget-tokens N\n"
      "            --spill-form residual|kv|tokens|none --compare-unbounded]: one JSON line a "
      "turn\n"
      "  bench     prefill and decode tokens/s for --threads-list\n"
      "  prefix-bench  --bench-sessions N --bench-prompt-tokens P [--threads T]: first-turn\n"
      "            time of N sessions sharing a system prompt, prefix reuse off and on");
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
  } else if (cmd == "prefix-bench") {
    s = rsd::PrefixBench();
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
