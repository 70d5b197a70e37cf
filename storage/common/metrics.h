// What the router's and the workers' Prometheus metrics share.
#pragma once

#include "prometheus/histogram.h"

namespace rsd {

// Latency histogram buckets in seconds, 1 ms to 60 s, for every *_seconds histogram.
inline prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

}  // namespace rsd
