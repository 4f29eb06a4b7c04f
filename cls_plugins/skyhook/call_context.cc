// Per-call state: the memory pool capped at the call's budget and the CPU
// deadline checked between batches and nodes (-ETIME once exceeded).

#include <time.h>

#include <cerrno>

#include "kernel_internal.h"

namespace skyhook {

int64_t ThreadCpuNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

CallContext::CallContext(int64_t memory_cap, int64_t cpu_budget_ns, int64_t start_ns)
    : proxy_(arrow::system_memory_pool()),
      capped_(&proxy_, memory_cap),
      start_ns_(start_ns),
      budget_ns_(cpu_budget_ns) {}

int64_t CallContext::CpuNs() const { return ThreadCpuNs() - start_ns_; }

int64_t WallMs() {
  timespec ts{};
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return 0;
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

arrow::Status CheckCallerDeadline(int64_t deadline_ms) {
  if (deadline_ms > 0) {
    const int64_t now = WallMs();
    if (now > deadline_ms)
      return ErrnoStatus(ETIME, "the caller's deadline passed " + std::to_string(now - deadline_ms) +
                                    " ms ago: nobody waits for this answer");
  }
  return arrow::Status::OK();
}

arrow::Status CallContext::CheckDeadline() {
  if (checks_++ % 8 != 0) return arrow::Status::OK();
  return CheckClocks();
}

arrow::Status CallContext::CheckClocks() const {
  ARROW_RETURN_NOT_OK(CheckCallerDeadline(caller_deadline_ms_));
  const int64_t used = CpuNs();
  if (used > budget_ns_)
    return ErrnoStatus(ETIME, "CPU time budget of " + std::to_string(budget_ns_ / 1000000) +
                                      " ms exceeded");
  if (busy_cap_ns_ > 0 && !progressed_ && used > busy_cap_ns_)
    return ErrnoStatus(EBUSY, "other clients are waiting and this client has used more than its share: "
                              "a slice of " + std::to_string(busy_cap_ns_ / 1000) +
                              " us of CPU cannot scan one chunk of this request; retry later");
  return arrow::Status::OK();
}

}  // namespace skyhook
