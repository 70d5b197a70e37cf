// What scheduler.cc, scheduler_admit.cc and scheduler_step.cc share: a turn while it runs.
#pragma once

#include <cstdint>
#include <memory>

#include "worker/engine/scheduler.h"
#include "worker/engine/turn_decoder.h"

namespace rsd {

struct Scheduler::Running {
  Queued q;
  PendingTurn turn;
  bool begun = false;  // BeginTurn succeeded: a failure rolls the session back
  std::unique_ptr<TurnDecoder> decoder;
  int64_t reserve_blocks = 0;
  double admitted = 0, first_token = 0;
  int64_t text_offset = 0;
};

}  // namespace rsd
