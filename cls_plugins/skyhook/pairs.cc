// Pairs of objects (formats/README.md "Pairs"): PairFirst/PairSecond give,
// for every pair (i < j) of one collection's list, in ak.combinations(n=2)
// order (i-major), the element at i / at j; CrossFirst/CrossSecond give, for
// every (i, j) of the cartesian product of two collections' lists, in
// ak.cartesian order (i-major), the first collection's element at i / the
// second's at j.  The result is a collection like any other (one list per
// event), so element-wise operators, masks and reductions apply to it.
// CrossAny/CrossAll reduce a cartesian product's pairs per first object (for
// each jet: is any / every muon far enough), giving a collection shaped like
// the first collection.
//
// The number of pairs grows as the square of a list's length: it is counted
// before anything is allocated, E2BIG past kMaxPairs and ENOMEM when the
// buffers do not fit in the call's capped pool.  Null elements stay null.

#include <cstring>
#include <limits>

#include "eval_internal.h"

namespace skyhook {

namespace {

// More pairs than this in one batch is E2BIG whatever the memory cap (it keeps
// the counts far from overflowing int64 and the loop's time bounded).
constexpr int64_t kMaxPairs = int64_t{1} << 32;

// Pairs of each event: n(n-1)/2 of one list, or nx*ny of two; E2BIG past kMaxPairs.
arrow::Result<std::shared_ptr<arrow::Buffer>> PairOffsets(Op op, const Value& x, const Value* y,
                                                          int64_t n_events, CallContext* ctx) {
  ARROW_ASSIGN_OR_RAISE(auto buf, NewBuffer((n_events + 1) * 8, ctx));
  int64_t* o = reinterpret_cast<int64_t*>(buf->mutable_data());
  const int64_t* ox = x.offs();
  const int64_t* oy = y ? y->offs() : nullptr;
  o[0] = 0;
  for (int64_t e = 0; e < n_events; ++e) {
    const int64_t nx = ox[e + 1] - ox[e];
    int64_t k;
    if (y == nullptr) {
      // n(n-1)/2 without overflow for any n below kMaxPairs' square root bound
      if (nx > (int64_t{1} << 31)) k = kMaxPairs + 1;
      else k = nx * (nx - 1) / 2;
    } else {
      const int64_t ny = oy[e + 1] - oy[e];
      if (nx != 0 && ny > kMaxPairs / nx) k = kMaxPairs + 1;
      else k = nx * ny;
    }
    if (k > kMaxPairs - o[e])
      return ErrnoStatus(E2BIG, std::string(OpName(op)) + ": more than " + std::to_string(kMaxPairs) +
                                    " pairs in one batch (an event with " + std::to_string(nx) +
                                    " objects); select fewer objects first");
    o[e + 1] = o[e] + k;
  }
  return buf;
}

template <typename T>
void Fill(Op op, const Value& x, const Value* y, int64_t n_events, T* out, uint8_t* ov) {
  const int64_t* ox = x.offs();
  const int64_t* oy = y ? y->offs() : nullptr;
  // the collection whose elements are taken (CrossSecond: y)
  const Value& src = op == Op::CrossSecond ? *y : x;
  const T* v = src.values<T>();
  const uint8_t* va = src.validity();
  int64_t k = 0;
  for (int64_t e = 0; e < n_events; ++e) {
    const int64_t bx = ox[e], nx = ox[e + 1] - bx;
    if (y == nullptr) {
      for (int64_t i = 0; i < nx; ++i)
        for (int64_t j = i + 1; j < nx; ++j, ++k) {
          const int64_t at = bx + (op == Op::PairFirst ? i : j);
          out[k] = v[at];
          if (ov) ov[k] = va[at];
        }
    } else {
      const int64_t by = oy[e], ny = oy[e + 1] - by;
      for (int64_t i = 0; i < nx; ++i)
        for (int64_t j = 0; j < ny; ++j, ++k) {
          const int64_t at = op == Op::CrossFirst ? bx + i : by + j;
          out[k] = v[at];
          if (ov) ov[k] = va[at];
        }
    }
  }
}


// CrossAny/CrossAll(p, x, y): for each object i of x, any/all of p over its run of ny
// pairs (null elements skipped, as Any/All skip them); shaped like x.
template <typename T>
void PerFirst(Op op, const Value& p, const Value& x, const Value& y, uint8_t* o) {
  const T* v = p.values<T>();
  const uint8_t* va = p.validity();
  const int64_t *ox = x.offs(), *oy = y.offs(), *op_ = p.offs();
  for (int64_t e = 0; e < x.n_events; ++e) {
    const int64_t ny = oy[e + 1] - oy[e];
    for (int64_t i = ox[e], k = op_[e]; i < ox[e + 1]; ++i) {
      bool r = op == Op::CrossAll;
      for (int64_t j = 0; j < ny; ++j, ++k) {
        if (va && !va[k]) continue;
        const bool nz = v[k] != 0;
        if (op == Op::CrossAny && nz) r = true;
        if (op == Op::CrossAll && !nz) r = false;
      }
      o[i] = r;
    }
  }
}

arrow::Status EvalPerFirst(Op op, const Value& p, const Value& x, const Value& y, Value* out,
                           CallContext* ctx) {
  const int64_t *ox = x.offs(), *oy = y.offs(), *op_ = p.offs();
  for (int64_t e = 0; e < x.n_events; ++e) {
    const int64_t nx = ox[e + 1] - ox[e], ny = oy[e + 1] - oy[e];
    if (op_[e + 1] - op_[e] != nx * ny)
      return Invalid(std::string(OpName(op)) + ": event " + std::to_string(e) + " has " +
                     std::to_string(op_[e + 1] - op_[e]) + " pairs, not " + std::to_string(nx) +
                     " x " + std::to_string(ny) + " (the cartesian product of its second and third "
                     "arguments)");
  }
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(x.length, 1), ctx));
  out->t = {VType::Bool, true, false};
  out->scalar = false;
  out->n_events = x.n_events;
  out->length = x.length;
  out->offsets = x.offsets;
  Dispatch(p.t.type, [&](auto tag) {
    PerFirst<typename decltype(tag)::type>(op, p, x, y, out->data->mutable_data());
  });
  return arrow::Status::OK();
}

}  // namespace

arrow::Status EvalPairs(Op op, const std::vector<const Value*>& args, Value* out, CallContext* ctx) {
  for (const Value* a : args)
    if (!a->t.is_list || a->scalar || !a->offsets)
      return Invalid(std::string(OpName(op)) + ": pairs are made of collections");
  for (const Value* a : args)
    if (a->n_events != args[0]->n_events)
      return Invalid(std::string(OpName(op)) + ": two collections of different event counts");
  if (op == Op::CrossAny || op == Op::CrossAll) return EvalPerFirst(op, *args[0], *args[1], *args[2], out, ctx);
  const Value& x = *args[0];
  const Value* y = args.size() > 1 ? args[1] : nullptr;
  if (y && y->n_events != x.n_events)
    return Invalid(std::string(OpName(op)) + ": two collections of different event counts");
  const int64_t ne = x.n_events;
  ARROW_ASSIGN_OR_RAISE(out->offsets, PairOffsets(op, x, y, ne, ctx));
  const int64_t n_pairs = reinterpret_cast<const int64_t*>(out->offsets->data())[ne];
  const Value& src = op == Op::CrossSecond ? *y : x;
  const int bytes = VTypeBytes(src.t.type);
  auto no_room = [&](const arrow::Status& st) -> arrow::Status {
    if (!st.IsOutOfMemory()) return st;
    return ErrnoStatus(ENOMEM, std::string(OpName(op)) + ": " + std::to_string(n_pairs) +
                                   " pairs (" + std::to_string(n_pairs * (bytes + (src.valid ? 1 : 0))) +
                                   " bytes) do not fit in the call's memory; select fewer objects first");
  };
  auto data = NewBuffer(std::max<int64_t>(n_pairs, 1) * bytes, ctx);
  if (!data.ok()) return no_room(data.status());
  out->data = *data;
  uint8_t* ov = nullptr;
  if (src.valid) {
    auto valid = NewBuffer(std::max<int64_t>(n_pairs, 1), ctx);
    if (!valid.ok()) return no_room(valid.status());
    out->valid = *valid;
    ov = out->valid->mutable_data();
  }
  ARROW_RETURN_NOT_OK(ctx->CheckDeadline());
  out->t = src.t;
  out->t.weak = false;
  out->t.is_list = true;
  out->scalar = false;
  out->n_events = ne;
  out->length = n_pairs;
  Dispatch(src.t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    Fill<T>(op, x, y, ne, reinterpret_cast<T*>(out->data->mutable_data()), ov);
  });
  return arrow::Status::OK();
}

}  // namespace skyhook
