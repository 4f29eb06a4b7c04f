// Fair shares of an OSD's CPU between clients (formats/README.md "Time slices").
//
// Calls on one placement group run one after the other, so a client that sends
// long calls makes every other client's calls on that PG wait (the "poison
// pill").  Each call is therefore time-sliced (scan.cc); this table decides how
// long a slice is.  It keeps each client's CPU time in the class, decayed with
// a half-life, and gives a client that used more than its share while others
// were active a short slice: its work goes on (the caller resumes), but in
// pieces short enough that the others' calls get between them.
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
    int64_t active_ns = 1000000;        // a client with less (decayed) is not competing
    double hog_factor = 1.2;            // more than this times an equal share is a hog
    int64_t slice_ns = 50000000;        // the slice of a call, 50 ms of CPU
    int64_t hog_slice_ns = 2000000;     // ... and of a hog's call, 2 ms
    size_t max_clients = 4096;          // the table forgets idle clients past this
  };

  FairShare() = default;
  explicit FairShare(Policy policy) : policy_(policy) {}

  // The slice for the next call of `client` at time `now_ns` (a monotonic clock).
  int64_t SliceNs(uint64_t client, int64_t now_ns);
  // Records `cpu_ns` spent on a call of `client`.
  void Charge(uint64_t client, int64_t cpu_ns, int64_t now_ns);

  const Policy& policy() const { return policy_; }

 private:
  struct Usage {
    double ns = 0;      // decayed CPU time, as of `at`
    int64_t at = 0;
  };
  double Decayed(const Usage& u, int64_t now_ns) const;
  void Forget(int64_t now_ns);

  Policy policy_;
  std::mutex mu_;
  std::unordered_map<uint64_t, Usage> clients_;
};

}  // namespace skyhook
