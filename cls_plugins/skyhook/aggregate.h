// Aggregation: partial results of count, sum, min, max, mean and 1-D/2-D
// histograms over the selected events, merged by the coordinator
// (formats/README.md "Aggregations").  Integers are summed exactly (wrapping
// int64; uint64 wrapping uint64), NaN and null values are skipped, histograms have under- and
// overflow bins.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "kernel_internal.h"
#include "skyhook_scan_generated.h"

namespace skyhook {

struct AggState {
  int64_t count = 0;
  bool is_integer = false;
  bool is_unsigned = false;  // uint64 x: umin/umax, and isum read as uint64
  uint64_t isum = 0;  // wrapping 64-bit sum
  int64_t imin = INT64_MAX, imax = INT64_MIN;
  uint64_t umin = UINT64_MAX, umax = 0;
  double fsum = 0, fmin = INFINITY, fmax = -INFINITY;
  std::vector<double> sumw, sumw2;
};

// One state per aggregation of the plan, histogram bins allocated.
std::vector<AggState> NewAggregates(const Plan& plan);

// Sets each state to where the previous slices left it (Plan::resume), if any.
void ResumeAggregates(const Plan& plan, std::vector<AggState>* aggs);

// Adds the events `sel` (rows of `values`) to one aggregation.
arrow::Status UpdateAggregate(const Plan& plan, const AggSpec& g, const std::vector<Value>& values,
                              const std::vector<int64_t>& sel, int64_t n_events, AggState* st,
                              CallContext* ctx);

// The reply's AggregateResult vector.
flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::AggregateResult>>> EncodeAggregates(
    flatbuffers::FlatBufferBuilder& fbb, const Plan& plan, const std::vector<AggState>& aggs);

}  // namespace skyhook
