// Status helpers shared by every component. Abseil 20220623 has no status macros, so they live here.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RSD_CONCAT_INNER(a, b) a##b
#define RSD_CONCAT(a, b) RSD_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` yields a non-OK absl::Status.
#define RSD_RETURN_IF_ERROR(expr)                  \
  do {                                             \
    ::absl::Status rsd_status_ = (expr);           \
    if (!rsd_status_.ok()) return rsd_status_;     \
  } while (0)

// `lhs = value of expr`, or returns its status from the enclosing function.
#define RSD_ASSIGN_OR_RETURN(lhs, expr) \
  RSD_ASSIGN_OR_RETURN_IMPL(RSD_CONCAT(rsd_statusor_, __LINE__), lhs, expr)
#define RSD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return std::move(tmp).status();  \
  lhs = std::move(tmp).value()

// A broken internal invariant: crash loudly with the location. Never for untrusted input.
#define RSD_CHECK(cond)                                                                 \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "RSD_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
