// What rsd-run's commands share (rsd_run.cc, rsd_run_bench.cc): the flags the bench reads, the
// engine the flags describe, and JSON output.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "worker/engine/engine.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(std::string, threads_list);
ABSL_DECLARE_FLAG(std::string, batch_list);
ABSL_DECLARE_FLAG(bool, bench_restore);
ABSL_DECLARE_FLAG(int, bench_prompt_tokens);
ABSL_DECLARE_FLAG(int, bench_decode_tokens);
ABSL_DECLARE_FLAG(int, bench_repeats);
ABSL_DECLARE_FLAG(int, threads);

namespace rsd {

using nlohmann::json;

// An engine on the --model with the command line's options, `threads` compute threads and a hot
// pool of `kv_budget_bytes` (0: one context).
absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(int threads, size_t kv_budget_bytes = 0);

// JSON text out. Model output is bytes and may be invalid UTF-8 (a token can split a character):
// each invalid sequence becomes U+FFFD instead of an exception.
std::string Dump(const json& j, int indent = -1);

// rsd-run bench (rsd_run_bench.cc).
absl::Status Bench();
// rsd-run prefix-bench (rsd_run_prefix.cc).
absl::Status PrefixBench();

}  // namespace rsd
