// Kernels over the lists of a collection: per-event reductions (count,
// count_nonzero, sum, min, max, mean, any, all), element access (first, last,
// index; null when out of range) and masks (`Muon_pt[Muon_pt > 20]`).
// Null elements are skipped, as awkward's reducers skip None.

#include <cmath>
#include <limits>
#include <type_traits>

#include "eval_internal.h"

namespace skyhook {

namespace {

template <typename T>
arrow::Status Reduce(Op op, VType out_type, const Value& a, Value* out, CallContext* ctx) {
  const int64_t ne = a.n_events;
  const int64_t* off = a.offs();
  const T* x = a.values<T>();
  const uint8_t* va = a.validity();
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(ne, 1) * 8, ctx));
  std::shared_ptr<arrow::Buffer> valid;
  uint8_t* ov = nullptr;
  if (op == Op::Min || op == Op::Max || op == Op::Mean) {
    ARROW_ASSIGN_OR_RAISE(valid, NewBuffer(std::max<int64_t>(ne, 1), ctx));
    ov = valid->mutable_data();
  }
  uint8_t* raw = out->data->mutable_data();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t b = off[e], end = off[e + 1];
    switch (op) {
      case Op::Count: case Op::CountNonzero: {
        int64_t c = 0;
        for (int64_t j = b; j < end; ++j)
          if (op == Op::Count || !va || va[j]) c += op == Op::Count ? 1 : (x[j] != 0 ? 1 : 0);  // NaN != 0
        reinterpret_cast<int64_t*>(raw)[e] = c;
        break;
      }
      case Op::Any: case Op::All: {
        bool r = op == Op::All;
        for (int64_t j = b; j < end; ++j) {
          if (va && !va[j]) continue;
          bool nz = x[j] != 0;
          if (op == Op::Any && nz) { r = true; break; }
          if (op == Op::All && !nz) { r = false; break; }
        }
        raw[e] = r;
        break;
      }
      case Op::Sum: {
        if (out_type == VType::F32) {
          float s = 0;
          for (int64_t j = b; j < end; ++j)
            if (!va || va[j]) s += static_cast<float>(x[j]);
          reinterpret_cast<float*>(raw)[e] = s;
        } else if (out_type == VType::F64) {
          double s = 0;
          for (int64_t j = b; j < end; ++j)
            if (!va || va[j]) s += static_cast<double>(x[j]);
          reinterpret_cast<double*>(raw)[e] = s;
        } else {  // int64 or uint64, wrapping
          uint64_t s = 0;
          if constexpr (std::is_integral_v<T>) {
            for (int64_t j = b; j < end; ++j)
              if (!va || va[j]) s += static_cast<uint64_t>(static_cast<int64_t>(x[j]));
          }
          reinterpret_cast<uint64_t*>(raw)[e] = s;
        }
        break;
      }
      case Op::Mean: {
        double s = 0;
        int64_t c = 0;
        for (int64_t j = b; j < end; ++j)
          if (!va || va[j]) { s += static_cast<double>(x[j]); ++c; }
        reinterpret_cast<double*>(raw)[e] = c ? s / static_cast<double>(c) : 0.0;
        ov[e] = c > 0;
        break;
      }
      default: {  // Min, Max; NaN propagates like np.minimum
        T m{};
        bool any = false, nan = false;
        for (int64_t j = b; j < end; ++j) {
          if (va && !va[j]) continue;
          if constexpr (std::is_floating_point_v<T>) {
            if (std::isnan(x[j])) nan = true;
          }
          if (!any || (op == Op::Min ? x[j] < m : x[j] > m)) m = x[j];
          any = true;
        }
        if constexpr (std::is_floating_point_v<T>) {
          if (nan) m = std::numeric_limits<T>::quiet_NaN();
        }
        reinterpret_cast<T*>(raw)[e] = m;
        ov[e] = any;
        break;
      }
    }
  }
  out->valid = valid;
  return arrow::Status::OK();
}

template <typename T>
arrow::Status Access(const Node& n, const Value& a, Value* out, CallContext* ctx) {
  const int64_t ne = a.n_events;
  const int64_t* off = a.offs();
  const T* x = a.values<T>();
  const uint8_t* va = a.validity();
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(ne, 1) * sizeof(T), ctx));
  ARROW_ASSIGN_OR_RAISE(out->valid, NewBuffer(std::max<int64_t>(ne, 1), ctx));
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  uint8_t* ov = out->valid->mutable_data();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t len = off[e + 1] - off[e];
    int64_t pos = n.op == Op::First ? 0 : n.op == Op::Last ? len - 1 : n.int_value;
    if (pos < 0) pos += len;
    if (pos >= 0 && pos < len) {
      o[e] = x[off[e] + pos];
      ov[e] = va ? va[off[e] + pos] : 1;
    } else {
      o[e] = T{};
      ov[e] = 0;
    }
  }
  return arrow::Status::OK();
}

template <typename T>
arrow::Status DoMask(const Value& l, const Value& m, Value* out, CallContext* ctx) {
  const int64_t ne = l.n_events;
  const int64_t* off = l.offs();
  const T* x = l.values<T>();
  const uint8_t* mk = m.values<uint8_t>();
  const uint8_t* vl = l.validity();
  const uint8_t* vm = m.validity();
  int64_t kept = 0;
  for (int64_t j = 0; j < l.length; ++j) kept += (vm && !vm[j]) || mk[j];
  ARROW_ASSIGN_OR_RAISE(out->offsets, NewBuffer((ne + 1) * 8, ctx));
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(kept, 1) * sizeof(T), ctx));
  const bool nulls = vl || vm;
  if (nulls) {
    ARROW_ASSIGN_OR_RAISE(out->valid, NewBuffer(std::max<int64_t>(kept, 1), ctx));
  }
  int64_t* oo = reinterpret_cast<int64_t*>(out->offsets->mutable_data());
  T* o = reinterpret_cast<T*>(out->data->mutable_data());
  uint8_t* ov = nulls ? out->valid->mutable_data() : nullptr;
  int64_t k = 0;
  oo[0] = 0;
  for (int64_t e = 0; e < ne; ++e) {
    for (int64_t j = off[e]; j < off[e + 1]; ++j) {
      const bool mask_null = vm && !vm[j];
      if (!mask_null && !mk[j]) continue;
      o[k] = x[j];
      if (ov) ov[k] = !mask_null && (!vl || vl[j]);  // awkward: a None mask gives None
      ++k;
    }
    oo[e + 1] = k;
  }
  out->length = k;
  return arrow::Status::OK();
}

}  // namespace

arrow::Status EvalReduce(Op op, VType out_type, const Value& a, Value* out, CallContext* ctx) {
  return Dispatch(a.t.type, [&](auto tag) {
    return Reduce<typename decltype(tag)::type>(op, out_type, a, out, ctx);
  });
}

arrow::Status EvalAccess(const Node& n, const Value& a, Value* out, CallContext* ctx) {
  return Dispatch(a.t.type, [&](auto tag) { return Access<typename decltype(tag)::type>(n, a, out, ctx); });
}

arrow::Status EvalMask(VType t, const Value& list, const Value& mask, Value* out, CallContext* ctx) {
  return Dispatch(t, [&](auto tag) { return DoMask<typename decltype(tag)::type>(list, mask, out, ctx); });
}

}  // namespace skyhook
