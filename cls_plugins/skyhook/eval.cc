// The IR evaluator: one node at a time, with NanoAOD jagged semantics
// (formats/README.md).  The operator's kind (op_table.h) picks the path:
// every operand is first "materialized" (values.cc: cast to the operation's
// type, broadcast to its shape), then one loop family runs (elementwise.cc,
// collections.cc).  Memory comes from the call's capped pool.  Literal-only
// operations are computed on one element and stay scalars.
// Ignored on purpose: nested lists, strings, null lists (read as empty lists).

#include <cstring>

#include "eval_internal.h"

namespace skyhook {

namespace {

Value LiteralValue(const Node& n, int64_t n_events) {
  Value v;
  v.t = n.t;
  v.scalar = true;
  v.n_events = n_events;
  if (n.literal_kind == 2) v.fval = n.float_value;
  else v.ival = n.literal_kind == 0 ? (n.int_value != 0) : n.int_value;
  return v;
}

// A comparison; `out` has its shape set.
arrow::Status Compare(const Node& n, const Value& a, const Value& b, const Value* shape, int64_t ne,
                      Value* out, CallContext* ctx) {
  // A weak int literal out of the integer operand's range: a constant result.
  // A uint64 literal (type U64, ival its bits) fits a uint64 operand only.
  for (int k = 0; k < 2; ++k) {
    const Value& lit = k == 0 ? a : b;
    const Value& arr = k == 0 ? b : a;
    const bool unsigned_lit = lit.t.type == VType::U64;
    if (!(lit.scalar && lit.t.weak && (lit.t.type == VType::I64 || unsigned_lit)) || arr.t.weak ||
        !IsInteger(arr.t.type))
      continue;
    bool fits = true, above = false;
    Dispatch(arr.t.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      fits = unsigned_lit ? FitsInUnsigned<T>(static_cast<uint64_t>(lit.ival)) : FitsIn<T>(lit.ival);
      above = unsigned_lit || lit.ival > 0;
    });
    if (fits) continue;
    ARROW_ASSIGN_OR_RAISE(Value m, Materialize(arr, arr.t.type, shape, ne, ctx));
    ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(out->length, 1), ctx));
    std::memset(out->data->mutable_data(), OutOfRangeComparison(n.op, above, k == 0) ? 1 : 0,
                static_cast<size_t>(out->length));
    out->valid = m.valid;
    return arrow::Status::OK();
  }
  VType ct = Promote(a.t, b.t);
  if (ct == VType::F64 && IsInteger(a.t.type) && IsInteger(b.t.type) && !a.t.weak && !b.t.weak) {
    // int64-like vs uint64: exact, as NumPy 2 compares them
    bool a_signed = IsSigned(a.t.type);
    ARROW_ASSIGN_OR_RAISE(Value sa, Materialize(a_signed ? a : b, VType::I64, shape, ne, ctx));
    ARROW_ASSIGN_OR_RAISE(Value ub, Materialize(a_signed ? b : a, VType::U64, shape, ne, ctx));
    ARROW_RETURN_NOT_OK(EvalCompareMixed(n.op, sa, ub, a_signed, out, ctx));
    ARROW_ASSIGN_OR_RAISE(out->valid, AndValid({&sa, &ub}, out->length, ctx));
    return arrow::Status::OK();
  }
  ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(a, ct, shape, ne, ctx));
  ARROW_ASSIGN_OR_RAISE(Value mb, Materialize(b, ct, shape, ne, ctx));
  ARROW_RETURN_NOT_OK(EvalBinary(n.op, ct, ma, mb, out, ctx));
  ARROW_ASSIGN_OR_RAISE(out->valid, AndValid({&ma, &mb}, out->length, ctx));
  return arrow::Status::OK();
}

arrow::Status Logical(const Node& n, const std::vector<const Value*>& args, const Value* shape,
                      int64_t ne, Value* out, CallContext* ctx) {
  std::vector<Value> m;
  for (const Value* a : args) {
    ARROW_ASSIGN_OR_RAISE(Value v, Materialize(*a, VType::Bool, shape, ne, ctx));
    m.push_back(std::move(v));
  }
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(out->length, 1), ctx));
  uint8_t* o = out->data->mutable_data();
  const uint8_t* x = m[0].values<uint8_t>();
  if (n.op == Op::Not) {
    for (int64_t i = 0; i < out->length; ++i) o[i] = !x[i];
  } else {
    const uint8_t* y = m[1].values<uint8_t>();
    if (n.op == Op::And) for (int64_t i = 0; i < out->length; ++i) o[i] = x[i] && y[i];
    else for (int64_t i = 0; i < out->length; ++i) o[i] = x[i] || y[i];
  }
  std::vector<const Value*> vs;
  for (auto& v : m) vs.push_back(&v);
  ARROW_ASSIGN_OR_RAISE(out->valid, AndValid(vs, out->length, ctx));
  return arrow::Status::OK();
}

arrow::Status Choose(const Node& n, const std::vector<const Value*>& args, const Value* shape,
                     int64_t ne, Value* out, CallContext* ctx) {
  ARROW_ASSIGN_OR_RAISE(Value c, Materialize(*args[0], VType::Bool, shape, ne, ctx));
  ARROW_ASSIGN_OR_RAISE(Value a, Materialize(*args[1], n.t.type, shape, ne, ctx));
  ARROW_ASSIGN_OR_RAISE(Value b, Materialize(*args[2], n.t.type, shape, ne, ctx));
  ARROW_ASSIGN_OR_RAISE(out->data,
                        NewBuffer(std::max<int64_t>(out->length, 1) * VTypeBytes(n.t.type), ctx));
  Dispatch(n.t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = reinterpret_cast<T*>(out->data->mutable_data());
    const uint8_t* cc = c.values<uint8_t>();
    const T* x = a.values<T>();
    const T* y = b.values<T>();
    for (int64_t i = 0; i < out->length; ++i) o[i] = cc[i] ? x[i] : y[i];
  });
  // null when the condition or the chosen value is null (Arrow if_else, ak.where)
  if (c.valid || a.valid || b.valid) {
    ARROW_ASSIGN_OR_RAISE(out->valid, NewBuffer(std::max<int64_t>(out->length, 1), ctx));
    uint8_t* ov = out->valid->mutable_data();
    const uint8_t* cc = c.values<uint8_t>();
    const uint8_t *vc = c.validity(), *va = a.validity(), *vb = b.validity();
    for (int64_t i = 0; i < out->length; ++i)
      ov[i] = (!vc || vc[i]) && (cc[i] ? (!va || va[i]) : (!vb || vb[i]));
  }
  return arrow::Status::OK();
}

}  // namespace

arrow::Result<Value> EvaluateNode(const Plan& plan, uint32_t index, const std::vector<Value>& values,
                                  int64_t n_events, CallContext* ctx) {
  const Node& n = plan.nodes[index];
  if (n.op == Op::Literal) return LiteralValue(n, n_events);
  std::vector<const Value*> args;
  bool all_scalar = true;
  for (uint32_t j : n.args) {
    args.push_back(&values[j]);
    all_scalar &= values[j].scalar;
  }
  if (KindOf(n.op) == OpKind::Pairs) {
    // two collections of a cartesian product have lengths of their own: no common shape
    Value out;
    out.t = n.t;
    out.n_events = n_events;
    ARROW_RETURN_NOT_OK(EvalPairs(n.op, args, &out, ctx));
    return out;
  }
  // Literal-only operations are computed on one element and stay scalars.
  const int64_t ne = all_scalar ? 1 : n_events;
  ARROW_ASSIGN_OR_RAISE(const Value* shape, CommonShape(args, OpName(n.op)));
  const std::string where = "node " + std::to_string(index) + " (" + OpName(n.op) + ")";

  Value out;
  out.t = n.t;
  out.n_events = ne;
  out.length = shape ? shape->length : ne;
  if (shape) out.offsets = shape->offsets;

  auto finish = [&](Value v) -> arrow::Result<Value> {
    if (!all_scalar) return v;
    Value s;
    s.t = n.t;
    s.scalar = true;
    s.n_events = n_events;
    if (v.valid && !v.valid->data()[0])
      return Invalid(where + ": a literal-only expression has no value");
    Dispatch(n.t.type, [&](auto tag) {
      using T = typename decltype(tag)::type;
      T x = v.values<T>()[0];
      if constexpr (std::is_floating_point_v<T>) s.fval = x;
      else s.ival = static_cast<int64_t>(x);
    });
    return s;
  };

  const OpInfo& info = InfoOf(n.op);
  switch (info.kind) {
    case OpKind::Comparison:
      ARROW_RETURN_NOT_OK(Compare(n, *args[0], *args[1], shape, ne, &out, ctx));
      return finish(out);
    case OpKind::Arithmetic:
    case OpKind::Math:
      if (info.arity > 2) {  // InvMass: every operand in float64
        std::vector<Value> m;
        for (const Value* a : args) {
          ARROW_ASSIGN_OR_RAISE(Value v, Materialize(*a, VType::F64, shape, ne, ctx));
          m.push_back(std::move(v));
        }
        ARROW_RETURN_NOT_OK(EvalInvMass(m, &out, ctx));
        std::vector<const Value*> vs;
        for (auto& v : m) vs.push_back(&v);
        ARROW_ASSIGN_OR_RAISE(out.valid, AndValid(vs, out.length, ctx));
      } else if (info.arity == 2) {
        ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(*args[0], n.t.type, shape, ne, ctx));
        ARROW_ASSIGN_OR_RAISE(Value mb, Materialize(*args[1], n.t.type, shape, ne, ctx));
        arrow::Status st = EvalBinary(n.op, n.t.type, ma, mb, &out, ctx);
        if (!st.ok()) {
          if (StatusToErrno(st) == -EDOM) return ErrnoStatus(EDOM, where + ": " + st.message());
          return st;
        }
        ARROW_ASSIGN_OR_RAISE(out.valid, AndValid({&ma, &mb}, out.length, ctx));
      } else {
        ARROW_ASSIGN_OR_RAISE(Value ma, Materialize(*args[0], n.t.type, shape, ne, ctx));
        ARROW_RETURN_NOT_OK(EvalUnary(n.op, n.t.type, ma, &out, ctx));
        out.valid = ma.valid;
      }
      return finish(out);
    case OpKind::Logical:
      ARROW_RETURN_NOT_OK(Logical(n, args, shape, ne, &out, ctx));
      return finish(out);
    case OpKind::Choice:
      ARROW_RETURN_NOT_OK(Choose(n, args, shape, ne, &out, ctx));
      return finish(out);
    case OpKind::Mask:
      ARROW_RETURN_NOT_OK(EvalMask(n.t.type, *args[0], *args[1], &out, ctx));
      return out;
    case OpKind::Reduction:
    case OpKind::ElementAccess:
      out.length = ne;
      out.offsets.reset();
      if (info.kind == OpKind::Reduction) {
        ARROW_RETURN_NOT_OK(EvalReduce(n.op, n.t.type, *args[0], &out, ctx));
      } else {
        ARROW_RETURN_NOT_OK(EvalAccess(n, *args[0], &out, ctx));
      }
      return out;
    case OpKind::Pairs:  // handled above
    case OpKind::Leaf:
      break;  // Column nodes are read by the scan (scan.cc), not evaluated
  }
  return Invalid(where + ": cannot be evaluated here");
}

}  // namespace skyhook
