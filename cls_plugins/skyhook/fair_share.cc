// FairShare (fair_share.h): decayed CPU time per client, and the slice it earns.

#include "fair_share.h"

#include <cmath>
#include <iterator>

namespace skyhook {

double FairShare::Decayed(const Usage& u, int64_t now_ns) const {
  if (now_ns <= u.at) return u.ns;
  return u.ns * std::exp2(-static_cast<double>(now_ns - u.at) / static_cast<double>(policy_.half_life_ns));
}

int64_t FairShare::SliceNs(uint64_t client, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  // The table is small (clients of one OSD in the last seconds); one pass.
  double total = 0, mine = 0;
  int active = 0;
  for (const auto& [id, u] : clients_) {
    const double d = Decayed(u, now_ns);
    if (d < static_cast<double>(policy_.active_ns)) continue;
    total += d;
    ++active;
    if (id == client) mine = d;
  }
  if (active < 2 || mine * active <= policy_.hog_factor * total) return policy_.slice_ns;
  return policy_.hog_slice_ns;
}

void FairShare::Charge(uint64_t client, int64_t cpu_ns, int64_t now_ns) {
  std::lock_guard<std::mutex> lock(mu_);
  if (clients_.size() >= policy_.max_clients && clients_.find(client) == clients_.end()) Forget(now_ns);
  Usage& u = clients_[client];
  u.ns = Decayed(u, now_ns) + static_cast<double>(cpu_ns);
  u.at = now_ns;
}

// Drops the clients that are not competing; if all are, the table starts over
// (a bound on memory matters more than the history of thousands of clients).
void FairShare::Forget(int64_t now_ns) {
  for (auto it = clients_.begin(); it != clients_.end();)
    it = Decayed(it->second, now_ns) < static_cast<double>(policy_.active_ns) ? clients_.erase(it) : std::next(it);
  if (clients_.size() >= policy_.max_clients) clients_.clear();
}

}  // namespace skyhook
