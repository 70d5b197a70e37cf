// Per-session gates: one holder at a time, waiters in their deadline, cancellation, independent
// sessions, release on destruction or Release().
#include "router/session_gate.h"

#include <atomic>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/test_util.h"

namespace rsd::router {
namespace {

using ::rsd::testing::StatusIs;
using ::testing::HasSubstr;

TEST(SessionGatesTest, OneHolderAtATimeAndSessionsAreIndependent) {
  SessionGates gates;
  const SessionId a = SessionId::Random(), b = SessionId::Random();
  absl::StatusOr<SessionGates::Lock> la = gates.Acquire(a, "turn 't1'", absl::InfiniteFuture());
  ASSERT_TRUE(la.ok());
  EXPECT_TRUE(gates.Held(a));
  EXPECT_FALSE(gates.Held(b));
  EXPECT_TRUE(gates.Acquire(b, "turn 'u1'", absl::Now()).ok());  // released at once
  EXPECT_FALSE(gates.Held(b));
  EXPECT_THAT(gates.Acquire(a, "migration to 'w2'", absl::Now() + absl::Milliseconds(50)),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr("migration to 'w2' gave up waiting for turn 't1'")));
  la->Release();
  la->Release();  // idempotent
  EXPECT_FALSE(gates.Held(a));
  EXPECT_TRUE(gates.Acquire(a, "again", absl::Now()).ok());
}

TEST(SessionGatesTest, WaiterGetsTheGateWhenTheHolderLetsGo) {
  SessionGates gates;
  const SessionId a = SessionId::Random();
  std::atomic<int> order{0};
  int holder_done = 0, waiter_got = 0;
  std::optional<SessionGates::Lock> held;
  held.emplace(*gates.Acquire(a, "holder", absl::InfiniteFuture()));
  std::thread waiter([&] {
    absl::StatusOr<SessionGates::Lock> l = gates.Acquire(a, "waiter", absl::InfiniteFuture());
    ASSERT_TRUE(l.ok());
    waiter_got = ++order;
  });
  absl::SleepFor(absl::Milliseconds(100));
  holder_done = ++order;
  held.reset();
  waiter.join();
  EXPECT_EQ(holder_done, 1);
  EXPECT_EQ(waiter_got, 2);
  EXPECT_FALSE(gates.Held(a));
}

TEST(SessionGatesTest, CancelledWaiterGivesUp) {
  SessionGates gates;
  const SessionId a = SessionId::Random();
  absl::StatusOr<SessionGates::Lock> held = gates.Acquire(a, "failover", absl::InfiniteFuture());
  ASSERT_TRUE(held.ok());
  std::atomic<bool> cancel{false};
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(60));
    cancel = true;
  });
  EXPECT_THAT(gates.Acquire(a, "turn 'x'", absl::InfiniteFuture(), [&] { return cancel.load(); }),
              StatusIs(absl::StatusCode::kCancelled, HasSubstr("waiting for failover")));
  canceller.join();
  EXPECT_TRUE(gates.Held(a));
}

}  // namespace
}  // namespace rsd::router
