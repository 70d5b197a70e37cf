// rsd-run bench: prefill and decode tokens/s per thread count, batched decode, and restore rates
// from host checkpoints. Split from rsd_run.cc.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "storage/common/clock.h"
#include "storage/common/status.h"
#include "tools/rsd_run.h"

namespace rsd {
namespace {

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

// A comma-separated list of counts >= 1 from `flag` (INVALID_ARGUMENT naming it otherwise).
absl::StatusOr<std::vector<int>> ParseCounts(const std::string& list, const char* flag,
                                             const char* what) {
  std::vector<int> out;
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(item, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": '", item, "' is not ", what));
    }
    out.push_back(n);
  }
  return out;
}

// The pool for `max_batch` sequences decoding together (0: the default, one context).
absl::StatusOr<size_t> BenchPool(int max_batch, int np, int nd) {
  if (max_batch <= 1) return 0;
  // Every sequence of the largest batch, plus the bench's own: a block of slack each.
  RSD_ASSIGN_OR_RETURN(auto probe, MakeEngine(1, 1));
  const int64_t bt = probe->model().block_tokens();
  const int64_t per_seq = (np + nd + 2 + bt) / bt * bt * probe->model().state_bytes_per_token().kv;
  return static_cast<size_t>((max_batch + 2) * per_seq);
}

// Best prefill and decode seconds over --bench-repeats generations of `nd` tokens.
absl::StatusOr<std::pair<double, double>> BestGenerate(Engine& engine,
                                                       const std::vector<int32_t>& prompt, int nd) {
  double best_prefill = 1e30, best_decode = 1e30;
  for (int rep = 0; rep < absl::GetFlag(FLAGS_bench_repeats); ++rep) {
    SessionId seq = engine.CreateSequence();
    GenerateParams p;
    p.max_tokens = nd + 1;
    p.stop_at_eos = false;
    RSD_ASSIGN_OR_RETURN(GenerateResult r, engine.Generate(seq, prompt, p));
    best_prefill = std::min(best_prefill, r.prefill_seconds);
    best_decode = std::min(best_decode, r.decode_seconds);
    engine.DestroySequence(seq);
  }
  return std::make_pair(best_prefill, best_decode);
}

// Batched decode and (with --bench-restore) restore rates into `row`, printed unless --json.
absl::Status BenchExtras(Engine& engine, const std::vector<int32_t>& prompt,
                         const std::vector<int>& batches, int nd, double decode_limit, json* row) {
  const bool text = !absl::GetFlag(FLAGS_json);
  json by_batch = json::object();
  for (int b : batches) {
    if (b == 1) continue;
    RSD_ASSIGN_OR_RETURN(double tps, DecodeBatch(engine, prompt, b, nd));
    by_batch[std::to_string(b)] = tps;
    if (text) {
      std::printf("  decode at batch %d: %.1f tok/s%s\n", b, tps,
                  Limit(tps, decode_limit * b).c_str());
    }
  }
  (*row)["decode_batch_tokens_per_second"] = by_batch;
  if (!absl::GetFlag(FLAGS_bench_restore)) return absl::OkStatus();
  const StateBytesPerToken bpt = engine.model().state_bytes_per_token();
  for (bool kv : {true, false}) {
    RSD_ASSIGN_OR_RETURN(double tps, Restore(engine, prompt, kv));
    const char* form = kv ? "kv" : "residual";
    (*row)["restore_tokens_per_second"][form] = tps;
    if (text) {
      std::printf("  restore from host checkpoints (%s, %lld B/token): %.1f tok/s\n", form,
                  static_cast<long long>(kv ? bpt.kv : bpt.residual), tps);
    }
  }
  return absl::OkStatus();
}

// One row of the bench: prefill and decode at `threads`, then the extras.
absl::StatusOr<json> BenchRow(int threads, const std::vector<int>& batches, size_t pool) {
  const int np = absl::GetFlag(FLAGS_bench_prompt_tokens);
  const int nd = absl::GetFlag(FLAGS_bench_decode_tokens);
  RSD_ASSIGN_OR_RETURN(auto engine, MakeEngine(threads, pool));
  // A fixed pseudo-random prompt of ordinary token ids.
  std::vector<int32_t> prompt(np);
  for (int i = 0; i < np; ++i) prompt[i] = 100 + (i * 7919) % (engine->config().vocab_size - 200);
  RSD_ASSIGN_OR_RETURN(auto best, BestGenerate(*engine, prompt, nd));
  const auto [best_prefill, best_decode] = best;
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
  if (!absl::GetFlag(FLAGS_json)) {
    std::printf(
        "threads=%d backend=%s prefill %.1f tok/s (%d tokens)  decode %.1f tok/s (%d "
        "tokens)%s\n",
        threads, engine->backend().name().c_str(), np / best_prefill, np, nd / best_decode, nd,
        Limit(nd / best_decode, decode_limit).c_str());
  }
  RSD_RETURN_IF_ERROR(BenchExtras(*engine, prompt, batches, nd, decode_limit, &row));
  return row;
}

}  // namespace

absl::Status Bench() {
  std::vector<int> threads_list = {1};
  if (absl::GetFlag(FLAGS_device) == "cpu") {
    RSD_ASSIGN_OR_RETURN(threads_list, ParseCounts(absl::GetFlag(FLAGS_threads_list),
                                                   "--threads-list", "a thread count"));
  }
  RSD_ASSIGN_OR_RETURN(std::vector<int> batches, ParseCounts(absl::GetFlag(FLAGS_batch_list),
                                                             "--batch-list", "a batch size"));
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  RSD_ASSIGN_OR_RETURN(size_t pool, BenchPool(max_batch, absl::GetFlag(FLAGS_bench_prompt_tokens),
                                              absl::GetFlag(FLAGS_bench_decode_tokens)));
  json rows = json::array();
  for (int threads : threads_list) {
    RSD_ASSIGN_OR_RETURN(json row, BenchRow(threads, batches, pool));
    rows.push_back(row);
  }
  if (absl::GetFlag(FLAGS_json)) std::cout << Dump(rows) << "\n";
  return absl::OkStatus();
}

}  // namespace rsd
