// Shared test helpers: status matchers, temp dirs, where the models are.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rsd::testing {

inline absl::Status ToStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(status_or_status, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("...")))
MATCHER_P2(StatusIs, code, msg_matcher, "") {
  absl::Status s = ::rsd::testing::ToStatus(arg);
  if (s.code() != code) {
    *result_listener << "code is " << absl::StatusCodeToString(s.code()) << " (" << s.message()
                     << ")";
    return false;
  }
  return ::testing::ExplainMatchResult(msg_matcher, std::string(s.message()), result_listener);
}

// For set-up a test cannot go on without, in helpers where ASSERT_* cannot return: the failure is
// recorded with `what` and the status, then TestAbandoned is thrown, which gtest reports as this
// test's failure and goes on with the next test (an RSD_CHECK would abort the whole binary).
// Only on the test's own thread: thrown elsewhere (a scheduler's compute thread) it terminates.
struct TestAbandoned : std::runtime_error {
  using std::runtime_error::runtime_error;
};
inline void OkOrFail(const absl::Status& s, std::string_view what) {
  if (s.ok()) return;
  ADD_FAILURE() << what << ": " << s;
  throw TestAbandoned(std::string(what));
}
inline void TrueOrFail(bool condition, std::string_view what) {
  if (condition) return;
  ADD_FAILURE() << "expected " << what;
  throw TestAbandoned(std::string(what));
}

// A fresh directory under the test temp dir (TEST_TMPDIR or the system one), removed with its
// contents when the process that made it exits, unless RSD_KEEP_TEST_DIRS is set.
std::string MakeTempDir(const std::string& prefix);

// The repository root (RSD_SOURCE_DIR, set by ctest).
std::string SourceDir();

// Path of SmolLM2-135M-Instruct Q4_1 (RSD_SMOLLM2, or models/ under the source dir); "" if absent.
std::string SmolLM2Path();
// Path of ../shared/models/stories260K.gguf (RSD_STORIES260K or beside the checkout); "" if absent.
std::string Stories260KPath();

// Whether this tree is built with AddressSanitizer or ThreadSanitizer (tools/asan.sh, tsan.sh; the
// cluster's servers are built the same way as the tests). A process's RSS is its own only where it
// is not: shadow memory (and ASan's quarantine of freed blocks, TSan's access history) raise it by
// design, so bounds on RSS are checked only in the plain build.
inline constexpr bool kInstrumented =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif
inline constexpr bool kRssIsOurs = !kInstrumented;

// Whether the longest tests run their short configuration (fewer turns or cases, every path still
// taken): in an instrumented tree, which runs several times slower and whose purpose is the
// sanitizers' view of each path, not the repetitions; the plain build runs them whole.
// RSD_TEST_FULL=1 runs them whole there too; RSD_TEST_SHORT=1 runs them short in any build.
bool ShortRun();

}  // namespace rsd::testing
