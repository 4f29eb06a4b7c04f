// FairShare (fair_share.h): decayed CPU time per client, and the slice it earns.

#include "fair_share.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace skyhook {

double FairShare::Decayed(const Usage& u, int64_t now_ns) const {
  if (now_ns <= u.at) return u.ns;
  return u.ns * std::exp2(-static_cast<double>(now_ns - u.at) / static_cast<double>(policy_.half_life_ns));
}

FairShare::Slice FairShare::SliceFor(uint64_t client, int64_t now_ns, int64_t request_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (clients_.size() >= policy_.max_clients && clients_.find(client) == clients_.end()) Forget(now_ns);
  Usage& me = clients_[client];
  me.last_call = now_ns;
  // The table is small (clients of one OSD in the last seconds); one pass.
  double total = 0, mine = 0;
  int active = 0;
  for (const auto& [id, u] : clients_) {
    if (now_ns - u.last_call > policy_.active_window_ns) continue;
    const double d = Decayed(u, now_ns);
    total += d;
    ++active;
    if (id == client) mine = d;
  }
  if (active < 2) {
    me.busy_bytes = 0;
    return {policy_.slice_ns, false, false};
  }
  const bool hog = mine * active > policy_.hog_factor * total;
  return {hog ? policy_.hog_slice_ns : policy_.shared_slice_ns, true,
          me.busy_bytes > 0 && request_bytes >= me.busy_bytes};
}

void FairShare::NoteBusy(uint64_t client, int64_t request_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  Usage& u = clients_[client];
  u.busy_bytes = u.busy_bytes > 0 ? std::min(u.busy_bytes, request_bytes) : request_bytes;
}

void FairShare::Charge(uint64_t client, int64_t cpu_ns, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  Usage& u = clients_[client];
  u.ns = Decayed(u, now_ns) + static_cast<double>(cpu_ns);
  u.at = now_ns;
}

// Drops the clients that are not competing; if all are, the table starts over
// (a bound on memory matters more than the history of thousands of clients).
void FairShare::Forget(int64_t now_ns) {
  for (auto it = clients_.begin(); it != clients_.end();)
    it = now_ns - it->second.last_call > policy_.active_window_ns ? clients_.erase(it) : std::next(it);
  if (clients_.size() >= policy_.max_clients) clients_.clear();
}

}  // namespace skyhook
