// Request decoding: a ScanRequest (formats/skyhook_scan.fbs) becomes a Plan,
// before a byte of the object is read.  Order, so that a bad request costs
// nothing: size and file identifier, the flatbuffers Verifier (depth and
// table limits), the version, then per node its operator (a value of the
// enum), its arity (op_table.h), earlier-node arguments and depth; outputs,
// filter, row range, limit, compression, reply cap, aggregations and their
// axes.  Errnos: E2BIG for a limit, EINVAL for a malformed request,
// EPROTONOSUPPORT for another version, EMSGSIZE for histograms that cannot fit
// the reply.  Column names are resolved against the schema later (scan.cc).

#include <algorithm>
#include <cerrno>
#include <cmath>

#include <flatbuffers/flatbuffers.h>

#include "cls_skyhook_ops.h"
#include "kernel_internal.h"
#include "skyhook_scan_generated.h"

namespace skyhook {

namespace {

// Names travel back in the reply as flatbuffers strings, which are UTF-8 (the
// Verifier does not check it): well-formed sequences only, no overlongs or surrogates.
bool IsUtf8(const flatbuffers::String* s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s->data());
  const size_t n = s->size();
  for (size_t i = 0; i < n;) {
    const uint8_t c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace

namespace {

arrow::Status E2Big(std::string msg) { return ErrnoStatus(E2BIG, std::move(msg)); }
arrow::Status EInval(std::string msg) { return ErrnoStatus(EINVAL, std::move(msg)); }

arrow::Status CheckAxis(const fb::Axis* axis, const std::string& what, const Limits& limits,
                        AxisSpec* out) {
  if (axis == nullptr) return EInval(what + " is missing");
  if (axis->bins() == 0) return EInval(what + " has 0 bins");
  if (axis->bins() > static_cast<uint64_t>(limits.max_hist_bins))
    return E2Big(what + " has " + std::to_string(axis->bins()) + " bins, more than " +
                 std::to_string(limits.max_hist_bins));
  if (!std::isfinite(axis->low()) || !std::isfinite(axis->high()) || !(axis->low() < axis->high()))
    return EInval(what + ": range must be finite with low < high");
  // (v - low) / (high - low) * bins must be a number: a width that overflows to inf
  // would make every bin index NaN, and casting NaN to an integer is undefined
  if (!std::isfinite(axis->high() - axis->low()))
    return EInval(what + ": the width high - low overflows");
  *out = {axis->bins(), axis->low(), axis->high()};
  return arrow::Status::OK();
}

// The aggregates of a resumed request: one per aggregation, same name and kind,
// histograms with their cells; beyond them the request keeps max_request_bytes.
arrow::Status CheckResume(const fb::ScanRequest* req, const Plan& plan, size_t len, const Limits& limits) {
  const auto* resume = req->resume();
  int64_t state_bytes = 0;
  if (resume && resume->size() > 0) {
    if (resume->size() != plan.aggregations.size())
      return EInval("resume holds " + std::to_string(resume->size()) + " aggregates for " +
                    std::to_string(plan.aggregations.size()) + " aggregations");
    for (size_t a = 0; a < plan.aggregations.size(); ++a) {
      const fb::AggregateResult* r = resume->Get(static_cast<flatbuffers::uoffset_t>(a));
      const AggSpec& g = plan.aggregations[a];
      const std::string what = "resume of aggregation '" + g.name + "'";
      if (!r->name() || r->name()->str() != g.name || r->kind() != g.kind)
        return EInval(what + ": another name or kind");
      if (r->count() < 0) return EInval(what + ": a negative count");
      const bool hist = g.kind == AggKind::Hist1D || g.kind == AggKind::Hist2D;
      const size_t cells = hist ? (g.x_axis.bins + 2) * (g.kind == AggKind::Hist2D ? g.y_axis.bins + 2 : 1) : 0;
      const size_t sumw = r->sumw() ? r->sumw()->size() : 0, sumw2 = r->sumw2() ? r->sumw2()->size() : 0;
      if (sumw != cells || sumw2 != cells)
        return EInval(what + ": " + std::to_string(sumw) + " bins, expected " + std::to_string(cells));
      state_bytes += 16 * static_cast<int64_t>(cells) + 64;
    }
  }
  if (static_cast<int64_t>(len) - state_bytes > limits.max_request_bytes)
    return E2Big("request of " + std::to_string(static_cast<int64_t>(len) - state_bytes) +
                 " bytes (resume state aside), more than " + std::to_string(limits.max_request_bytes));
  return arrow::Status::OK();
}

}  // namespace

int64_t MaxRequestBytes(const Limits& limits) {
  // a resumed request also carries its histograms' state (Plan::resume)
  return limits.max_request_bytes + 16 * limits.max_total_hist_cells + 64 * 1024;
}

arrow::Status DecodeRequest(const uint8_t* data, size_t len, const Limits& limits, Plan* plan) {
  if (len > static_cast<size_t>(MaxRequestBytes(limits)))
    return E2Big("request of " + std::to_string(len) + " bytes, more than " +
                 std::to_string(MaxRequestBytes(limits)));
  if (len < 8 || !fb::ScanRequestBufferHasIdentifier(data))
    return EInval("not a ScanRequest (identifier SKH1 missing)");
  flatbuffers::Verifier verifier(data, len, /*max_depth=*/16, /*max_tables=*/200000);
  if (!fb::VerifyScanRequestBuffer(verifier))
    return EInval("the request fails the flatbuffers verifier");
  const fb::ScanRequest* req = fb::GetScanRequest(data);
  if (req->version() != cls_ops::kScanVersion)
    return ErrnoStatus(EPROTONOSUPPORT, "request version " + std::to_string(req->version()) +
                                            ", this class speaks " +
                                            std::to_string(cls_ops::kScanVersion));

  const auto* nodes = req->nodes();
  const size_t n_nodes = nodes ? nodes->size() : 0;
  if (n_nodes > static_cast<size_t>(limits.max_nodes))
    return E2Big(std::to_string(n_nodes) + " nodes, more than " + std::to_string(limits.max_nodes));
  plan->nodes.resize(n_nodes);
  std::vector<int64_t> depth(n_nodes, 1);
  for (size_t i = 0; i < n_nodes; ++i) {
    const fb::Node* fn = nodes->Get(static_cast<flatbuffers::uoffset_t>(i));
    Node& n = plan->nodes[i];
    const std::string at = "node " + std::to_string(i);
    if (static_cast<int>(fn->op()) > kMaxOp) return EInval(at + ": unknown op " + std::to_string(static_cast<int>(fn->op())));
    n.op = static_cast<Op>(fn->op());
    const size_t n_args = fn->args() ? fn->args()->size() : 0;
    if (static_cast<int>(n_args) != Arity(n.op))
      return EInval(at + " (" + OpName(n.op) + ") takes " + std::to_string(Arity(n.op)) +
                    " argument(s), got " + std::to_string(n_args));
    for (size_t k = 0; k < n_args; ++k) {
      uint32_t a = fn->args()->Get(static_cast<flatbuffers::uoffset_t>(k));
      if (a >= i) return EInval(at + ": argument " + std::to_string(a) + " is not an earlier node");
      n.args.push_back(a);
      depth[i] = std::max(depth[i], depth[a] + 1);
    }
    if (depth[i] > limits.max_depth)
      return E2Big("expression deeper than " + std::to_string(limits.max_depth) + " at " + at);
    if (n.op == Op::Column) {
      if (!fn->name() || fn->name()->size() == 0) return EInval(at + ": a column without a name");
      if (!IsUtf8(fn->name())) return EInval(at + ": a column name that is not UTF-8");
      n.name = fn->name()->str();
    } else if (n.op == Op::Literal) {
      if (static_cast<int>(fn->literal_kind()) > static_cast<int>(fb::LiteralKind::MAX))
        return EInval(at + ": unknown literal kind " + std::to_string(static_cast<int>(fn->literal_kind())));
      n.literal_kind = static_cast<int>(fn->literal_kind());
    }
    n.int_value = fn->int_value();
    n.float_value = fn->float_value();
  }
  auto check_node = [&](int64_t idx, const std::string& what, bool optional) -> arrow::Status {
    if (optional && idx == -1) return arrow::Status::OK();
    if (idx < 0 || static_cast<size_t>(idx) >= n_nodes)
      return EInval(what + " refers to node " + std::to_string(idx) + " of " + std::to_string(n_nodes));
    return arrow::Status::OK();
  };
  if (req->outputs()) {
    for (const fb::Output* o : *req->outputs()) {
      if (!o->name()) return EInval("an output without a name");
      if (!IsUtf8(o->name())) return EInval("an output name that is not UTF-8");
      ARROW_RETURN_NOT_OK(check_node(o->node(), "output '" + o->name()->str() + "'", false));
      plan->outputs.emplace_back(o->name()->str(), o->node());
    }
  }
  plan->filter = req->filter();
  ARROW_RETURN_NOT_OK(check_node(plan->filter, "the filter", true));
  plan->row_start = req->row_start();
  plan->row_stop = req->row_stop();
  plan->limit = req->limit();
  if (plan->row_start < 0 || plan->row_stop < -1 ||
      (plan->row_stop >= 0 && plan->row_stop < plan->row_start))
    return EInval("bad row range [" + std::to_string(plan->row_start) + ", " +
                  std::to_string(plan->row_stop) + ")");
  if (plan->limit < -1) return EInval("bad limit " + std::to_string(plan->limit));
  if (static_cast<int>(req->compression()) > 2) return EInval("unknown compression");
  plan->compression = static_cast<int>(req->compression());
  if (req->max_reply_bytes() == 0) return EInval("max_reply_bytes is not set");
  if (req->deadline_ms() > static_cast<uint64_t>(INT64_MAX)) return EInval("deadline_ms out of range");
  plan->deadline_ms = static_cast<int64_t>(req->deadline_ms());
  plan->reply_cap = static_cast<int64_t>(
      std::min<uint64_t>(req->max_reply_bytes(), static_cast<uint64_t>(limits.max_reply_bytes)));

  int64_t hist_bytes = 0;
  if (req->aggregations()) {
    if (req->aggregations()->size() > static_cast<size_t>(limits.max_aggregations))
      return E2Big(std::to_string(req->aggregations()->size()) + " aggregations, more than " +
                   std::to_string(limits.max_aggregations));
    for (const fb::Aggregation* fa : *req->aggregations()) {
      AggSpec g;
      // the name comes back in the reply (AggregateResult.name): a string, UTF-8
      if (!fa->name()) return EInval("an aggregation without a name");
      if (!IsUtf8(fa->name())) return EInval("an aggregation name that is not UTF-8");
      g.name = fa->name()->str();
      const std::string what = "aggregation '" + g.name + "'";
      if (static_cast<int>(fa->kind()) > static_cast<int>(AggKind::MAX))
        return EInval(what + ": unknown kind");
      g.kind = fa->kind();
      g.x = fa->x();
      g.y = fa->y();
      g.weight = fa->weight();
      ARROW_RETURN_NOT_OK(check_node(g.x, what + " x", g.kind == AggKind::Count));
      ARROW_RETURN_NOT_OK(check_node(g.y, what + " y", g.kind != AggKind::Hist2D));
      ARROW_RETURN_NOT_OK(check_node(g.weight, what + " weight", true));
      // An axis the aggregation does not use is still checked when present: the Python
      // decoder refuses a bad axis whatever the kind, and the two must agree (issue 12, 6).
      AxisSpec unused;
      if (g.kind != AggKind::Hist1D && g.kind != AggKind::Hist2D && fa->x_axis())
        ARROW_RETURN_NOT_OK(CheckAxis(fa->x_axis(), what + " x axis", limits, &unused));
      if (g.kind != AggKind::Hist2D && fa->y_axis())
        ARROW_RETURN_NOT_OK(CheckAxis(fa->y_axis(), what + " y axis", limits, &unused));
      if (g.kind == AggKind::Hist1D || g.kind == AggKind::Hist2D) {
        ARROW_RETURN_NOT_OK(CheckAxis(fa->x_axis(), what + " x axis", limits, &g.x_axis));
        int64_t cells = g.x_axis.bins + 2;
        if (g.kind == AggKind::Hist2D) {
          ARROW_RETURN_NOT_OK(CheckAxis(fa->y_axis(), what + " y axis", limits, &g.y_axis));
          if (static_cast<int64_t>(g.x_axis.bins) * g.y_axis.bins > limits.max_hist_bins)
            return E2Big(what + ": more than " + std::to_string(limits.max_hist_bins) + " bins");
          cells *= g.y_axis.bins + 2;
        }
        hist_bytes += cells * 16;  // sumw and sumw2
      }
      plan->aggregations.push_back(std::move(g));
    }
  }
  if (hist_bytes > 16 * limits.max_total_hist_cells)
    return E2Big("histograms of " + std::to_string(hist_bytes / 16) + " cells together, more than " +
                 std::to_string(limits.max_total_hist_cells));
  plan->hist_bytes = hist_bytes;
  ARROW_RETURN_NOT_OK(CheckResume(req, *plan, len, limits));
  plan->resume = req->resume() && req->resume()->size() > 0 ? req->resume() : nullptr;
  plan->slice_ns = static_cast<int64_t>(req->slice_us()) * 1000;
  if (hist_bytes > plan->reply_cap)
    return ErrnoStatus(EMSGSIZE, "histograms of " + std::to_string(hist_bytes) +
                                     " bytes cannot fit a reply of " + std::to_string(plan->reply_cap));

  // Nodes that matter; Column nodes are resolved against the schema later.
  plan->needed.assign(n_nodes, false);
  for (auto& o : plan->outputs) plan->needed[o.second] = true;
  if (plan->filter >= 0) plan->needed[plan->filter] = true;
  for (auto& g : plan->aggregations)
    for (int32_t k : {g.x, g.y, g.weight})
      if (k >= 0) plan->needed[k] = true;
  for (size_t i = n_nodes; i-- > 0;)
    if (plan->needed[i])
      for (uint32_t a : plan->nodes[i].args) plan->needed[a] = true;
  for (size_t i = 0; i < n_nodes; ++i) {
    Node& n = plan->nodes[i];
    if (n.op != Op::Column) continue;
    for (size_t c = 0; c < plan->columns.size(); ++c)
      if (plan->columns[c].name == n.name) n.column = static_cast<int>(c);
    if (n.column < 0) {
      n.column = static_cast<int>(plan->columns.size());
      plan->columns.push_back({n.name, -1, {}});
    }
  }
  return arrow::Status::OK();
}

}  // namespace skyhook
