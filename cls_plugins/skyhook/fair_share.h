// Fair shares of an OSD's CPU between clients (formats/README.md "Time slices").
//
// Calls on one placement group run one after the other, so a client that sends
// long calls makes every other client's calls on that PG wait (the "poison
// pill").  Each call is therefore time-sliced (scan.cc); this table decides how
// long a slice is.  It keeps each client's CPU time in the class, decayed with
// a half-life, and gives a client that used more than its share while others
// were calling too (within the last second: a client whose calls wait behind a
// hog's makes few calls and spends little, so activity is counted in calls, not
// CPU) a short slice: its work goes on (the caller resumes), but in pieces short
// enough that the others' calls get between them.
//
// One table per OSD process (the class is loaded once); thread-safe.  Clients
// are told apart by what the OSD says sent the call (the client instance's
// global id), so the threads of one process share a share.
#pragma once

#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace skyhook {

class FairShare {
 public:
  struct Policy {
    int64_t half_life_ns = 1000000000;  // of the recorded CPU time
    int64_t active_window_ns = 1000000000;  // a client that called within this is competing
    double hog_factor = 1.2;            // more than this times an equal share is a hog
    int64_t slice_ns = 50000000;        // the slice of a call, 50 ms of CPU, when alone
    int64_t shared_slice_ns = 5000000;  // ... 5 ms while other clients call too
    int64_t hog_slice_ns = 2000000;     // ... and 2 ms for a hog
    size_t max_clients = 4096;          // the table forgets idle clients past this
  };

  FairShare() = default;
  explicit FairShare(Policy policy) : policy_(policy) {}

  struct Slice {
    int64_t ns;       // the call's time slice
    bool contended;   // other clients call too: a call that cannot scan one chunk
                      // within its slice stops with -EBUSY (Limits::busy_cap_ns)
    bool refuse;      // ... and an earlier request of this client, no larger than this
                      // one, could not: -EBUSY without decoding it
  };
  // The slice for the next call of `client` at time `now_ns` (a monotonic clock),
  // whose request has `request_bytes`.
  Slice SliceFor(uint64_t client, int64_t now_ns, int64_t request_bytes);
  // A contended call of `request_bytes` ended in -EBUSY.
  void NoteBusy(uint64_t client, int64_t request_bytes);
  // Records `cpu_ns` spent on a call of `client`.
  void Charge(uint64_t client, int64_t cpu_ns, int64_t now_ns);

 private:
  struct Usage {
    double ns = 0;          // decayed CPU time, as of `at`
    int64_t at = 0;
    int64_t last_call = 0;  // when its latest call started
    int64_t busy_bytes = 0;   // the smallest request that ended in -EBUSY since it was last alone
  };
  double Decayed(const Usage& u, int64_t now_ns) const;
  void Forget(int64_t now_ns);

  Policy policy_;
  std::mutex mu_;
  std::unordered_map<uint64_t, Usage> clients_;
};

}  // namespace skyhook
