// Aggregation (aggregate.h): updating partial results batch by batch and
// encoding them into the reply.

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "aggregate.h"

namespace skyhook {

namespace {

int64_t BinOf(double v, const AxisSpec& a) {
  if (v < a.low) return 0;
  if (v >= a.high) return static_cast<int64_t>(a.bins) + 1;
  double f = std::floor((v - a.low) / (a.high - a.low) * a.bins);
  return 1 + std::min<int64_t>(a.bins - 1, static_cast<int64_t>(f));
}

}  // namespace

std::vector<AggState> NewAggregates(const Plan& plan) {
  std::vector<AggState> aggs(plan.aggregations.size());
  for (size_t a = 0; a < aggs.size(); ++a) {
    const AggSpec& g = plan.aggregations[a];
    if (g.kind == AggKind::Hist1D || g.kind == AggKind::Hist2D) {
      size_t cells = (g.x_axis.bins + 2) * (g.kind == AggKind::Hist2D ? g.y_axis.bins + 2 : 1);
      aggs[a].sumw.assign(cells, 0.0);
      aggs[a].sumw2.assign(cells, 0.0);
    }
  }
  return aggs;
}

void ResumeAggregates(const Plan& plan, std::vector<AggState>* aggs) {
  if (plan.resume == nullptr) return;
  for (size_t a = 0; a < aggs->size(); ++a) {
    const fb::AggregateResult* r = plan.resume->Get(static_cast<flatbuffers::uoffset_t>(a));
    AggState& s = (*aggs)[a];
    s.count = r->count();
    s.is_integer = r->is_integer();
    s.is_unsigned = r->is_unsigned();
    const uint64_t bits = static_cast<uint64_t>(r->int_value());
    switch (plan.aggregations[a].kind) {
      case AggKind::Sum:
      case AggKind::Mean:
        s.isum = bits;
        s.fsum = r->float_value();
        break;
      case AggKind::Min:
        if (s.count > 0) s.imin = r->int_value(), s.umin = bits, s.fmin = r->float_value();
        break;
      case AggKind::Max:
        if (s.count > 0) s.imax = r->int_value(), s.umax = bits, s.fmax = r->float_value();
        break;
      default:
        break;
    }
    if (r->sumw()) s.sumw.assign(r->sumw()->begin(), r->sumw()->end());
    if (r->sumw2()) s.sumw2.assign(r->sumw2()->begin(), r->sumw2()->end());
  }
}

arrow::Status UpdateAggregate(const Plan& plan, const AggSpec& g, const std::vector<Value>& values,
                              const std::vector<int64_t>& sel, int64_t n_events, AggState* st,
                              CallContext* ctx) {
  if (g.kind == AggKind::Count && g.x < 0) {
    st->count += static_cast<int64_t>(sel.size());
    return arrow::Status::OK();
  }
  const Value& x = values[g.x];
  std::vector<const Value*> shapes = {&x};
  if (g.y >= 0) shapes.push_back(&values[g.y]);
  const Value* shape = nullptr;
  for (const Value* s : shapes) {
    if (!s->t.is_list || s->scalar) continue;
    if (shape && (shape->n_events != s->n_events ||
                  std::memcmp(shape->offsets->data(), s->offsets->data(),
                              static_cast<size_t>(8 * (s->n_events + 1))) != 0))
      return ErrnoStatus(EINVAL, "aggregation '" + g.name + "': x and y have different list lengths");
    shape = s;
  }
  if (g.weight >= 0 && values[g.weight].t.is_list && !values[g.weight].scalar && shape &&
      std::memcmp(shape->offsets->data(), values[g.weight].offsets->data(),
                  static_cast<size_t>(8 * (n_events + 1))) != 0)
    return ErrnoStatus(EINVAL, "aggregation '" + g.name + "': the weight has other list lengths than x");
  const bool integer = g.kind != AggKind::Hist1D && g.kind != AggKind::Hist2D &&
                       !IsFloat(plan.nodes[g.x].t.type);
  st->is_integer = integer && g.kind != AggKind::Count;
  // uint64 stays uint64: its values >= 2^63 would wrap in int64 and break min/max
  const bool unsign = st->is_integer && plan.nodes[g.x].t.type == VType::U64;
  st->is_unsigned = unsign;
  const VType as = unsign ? VType::U64 : integer ? VType::I64 : VType::F64;
  ARROW_ASSIGN_OR_RAISE(Value mx, Materialize(x, as, shape, n_events, ctx));
  Value my, mw;
  if (g.y >= 0) {
    ARROW_ASSIGN_OR_RAISE(my, Materialize(values[g.y], VType::F64, shape, n_events, ctx));
  }
  if (g.weight >= 0) {
    ARROW_ASSIGN_OR_RAISE(mw, Materialize(values[g.weight], VType::F64, shape, n_events, ctx));
  }
  const int64_t* off = shape ? shape->offs() : nullptr;
  const uint8_t* vx = mx.validity();
  const uint8_t* vy = g.y >= 0 ? my.validity() : nullptr;
  const uint8_t* vw = g.weight >= 0 ? mw.validity() : nullptr;
  for (int64_t e : sel) {
    const int64_t b = off ? off[e] : e, end = off ? off[e + 1] : e + 1;
    for (int64_t j = b; j < end; ++j) {
      if (vx && !vx[j]) continue;
      switch (g.kind) {
        case AggKind::Count: st->count++; break;
        case AggKind::Sum: case AggKind::Min: case AggKind::Max: case AggKind::Mean:
          if (unsign) {
            uint64_t v = mx.values<uint64_t>()[j];
            st->isum += v;
            st->umin = std::min(st->umin, v);
            st->umax = std::max(st->umax, v);
          } else if (integer) {
            int64_t v = mx.values<int64_t>()[j];
            st->isum += static_cast<uint64_t>(v);
            st->imin = std::min(st->imin, v);
            st->imax = std::max(st->imax, v);
          } else {
            double v = mx.values<double>()[j];
            if (std::isnan(v)) continue;
            st->fsum += v;
            st->fmin = std::min(st->fmin, v);
            st->fmax = std::max(st->fmax, v);
          }
          st->count++;
          break;
        case AggKind::Hist1D: case AggKind::Hist2D: {
          double v = mx.values<double>()[j];
          double w = g.weight >= 0 ? mw.values<double>()[j] : 1.0;
          if (std::isnan(v) || std::isnan(w) || (vw && !vw[j])) continue;
          int64_t bin = BinOf(v, g.x_axis);
          if (g.kind == AggKind::Hist2D) {
            double y = my.values<double>()[j];
            if (std::isnan(y) || (vy && !vy[j])) continue;
            bin = bin * (g.y_axis.bins + 2) + BinOf(y, g.y_axis);
          }
          st->sumw[static_cast<size_t>(bin)] += w;
          st->sumw2[static_cast<size_t>(bin)] += w * w;
          st->count++;
          break;
        }
      }
    }
  }
  return arrow::Status::OK();
}

flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<fb::AggregateResult>>> EncodeAggregates(
    flatbuffers::FlatBufferBuilder& fbb, const Plan& plan, const std::vector<AggState>& aggs) {
  std::vector<flatbuffers::Offset<fb::AggregateResult>> results;
  for (size_t a = 0; a < aggs.size(); ++a) {
    const AggSpec& g = plan.aggregations[a];
    const AggState& s = aggs[a];
    auto name = fbb.CreateString(g.name);
    flatbuffers::Offset<flatbuffers::Vector<double>> sumw, sumw2;
    if (!s.sumw.empty()) {
      sumw = fbb.CreateVector(s.sumw);
      sumw2 = fbb.CreateVector(s.sumw2);
    }
    int64_t ival = 0;
    double fval = 0;
    // integers: the exact value in int_value (float_value 0); floats: float_value
    if (g.kind == AggKind::Sum || g.kind == AggKind::Mean) {
      if (s.is_integer) ival = static_cast<int64_t>(s.isum);
      else fval = s.fsum;
    } else if (s.count > 0 && (g.kind == AggKind::Min || g.kind == AggKind::Max)) {
      const bool mn = g.kind == AggKind::Min;
      if (s.is_unsigned) ival = static_cast<int64_t>(mn ? s.umin : s.umax);  // the bits
      else if (s.is_integer) ival = mn ? s.imin : s.imax;
      else fval = mn ? s.fmin : s.fmax;
    }
    results.push_back(fb::CreateAggregateResult(fbb, name, g.kind, s.count,
                                                s.is_integer, ival, fval, sumw, sumw2,
                                                s.is_unsigned));
  }
  return fbb.CreateVector(results);
}

}  // namespace skyhook
