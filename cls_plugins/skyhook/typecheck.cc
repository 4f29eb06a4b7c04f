// Static typing of the expression DAG: NumPy 2 promotion with weak literals
// (NEP 50), as formats/README.md describes; each operator's result type comes
// from its TypeRule in the operator table (op_table.h).  Errors are EINVAL and
// name the node.  Ignored on purpose: strings, nested lists.

#include "eval_internal.h"

namespace skyhook {

namespace {

int IntBits(VType t) { return VTypeBytes(t) * 8; }

VType SignedOfBits(int bits) {
  switch (bits) {
    case 8: return VType::I8;
    case 16: return VType::I16;
    case 32: return VType::I32;
    default: return VType::I64;
  }
}

// np.result_type of two (strong) array types.
VType PromoteStrong(VType a, VType b) {
  if (a == b) return a;
  if (a == VType::Bool) return b;
  if (b == VType::Bool) return a;
  if (IsFloat(a) || IsFloat(b)) {
    if (a == VType::F64 || b == VType::F64) return VType::F64;
    VType other = IsFloat(a) ? b : a;  // float32 with an integer
    return IntBits(other) <= 16 ? VType::F32 : VType::F64;
  }
  if (IsSigned(a) == IsSigned(b)) return VTypeBytes(a) >= VTypeBytes(b) ? a : b;
  VType s = IsSigned(a) ? a : b, u = IsSigned(a) ? b : a;
  if (IntBits(s) > IntBits(u)) return s;
  if (IntBits(u) < 64) return SignedOfBits(2 * IntBits(u));
  return VType::F64;
}

// NEP 50: a weak literal takes the kind-compatible type of the array operand.  A uint64
// literal (LiteralKind UInt, a Python int >= 2^63) is a weak int like any other: it
// takes the array's integer type, where only uint64 holds it (Materialize refuses the
// rest), and converts to the array's float type.
VType PromoteWeak(VType weak, VType strong) {
  if (weak == VType::F64) return IsFloat(strong) ? strong : VType::F64;
  if (weak == VType::I64 || weak == VType::U64) return strong == VType::Bool ? VType::I64 : strong;
  return strong;  // a bool literal
}

std::string Describe(const Plan& plan, uint32_t i) {
  const Node& n = plan.nodes[i];
  std::string s = "node " + std::to_string(i) + " (" + OpName(n.op);
  if (n.op == Op::Column) s += " " + n.name;
  return s + ")";
}

}  // namespace

VType Promote(const NodeType& a, const NodeType& b) {
  if (a.weak && b.weak) {
    if (a.type == VType::Bool && b.type == VType::Bool) return VType::Bool;
    if (IsFloat(a.type) || IsFloat(b.type)) return VType::F64;
    return VType::I64;
  }
  if (a.weak) return PromoteWeak(a.type, b.type);
  if (b.weak) return PromoteWeak(b.type, a.type);
  return PromoteStrong(a.type, b.type);
}

// One pass in node order (arguments come first): each node's type from its
// arguments' types by the TypeRule of its operator.
arrow::Status TypeCheck(Plan* plan, const Limits&) {
  for (uint32_t i = 0; i < plan->nodes.size(); ++i) {
    Node& n = plan->nodes[i];
    std::vector<NodeType> a;
    for (uint32_t j : n.args) a.push_back(plan->nodes[j].t);
    auto no_bool = [&]() -> arrow::Status {
      for (size_t k = 0; k < a.size(); ++k)
        if (a[k].type == VType::Bool)
          return Invalid(Describe(*plan, i) + ": needs numbers, but argument " +
                         std::to_string(n.args[k]) + " is bool");
      return arrow::Status::OK();
    };
    // A uint64 literal takes its type from an array operand; between literals only
    // (Python's unbounded ints) it has no 64-bit type.  The compiler folds such
    // operations or refuses them; a request that has one is refused the same way.
    auto uint_literal_alone = [&](size_t from) -> arrow::Status {
      bool all_weak = from < a.size(), any_uint = false;
      for (size_t k = from; k < a.size(); ++k) {
        all_weak &= a[k].weak;
        any_uint |= a[k].weak && a[k].type == VType::U64;
      }
      if (all_weak && any_uint)
        return Invalid(Describe(*plan, i) + ": a uint64 literal needs an array operand "
                       "(an operation of literals only is computed by the compiler)");
      return arrow::Status::OK();
    };
    if (n.op != Op::Literal && n.op != Op::Column)
      ARROW_RETURN_NOT_OK(uint_literal_alone(InfoOf(n.op).type == TypeRule::Choice ? 1 : 0));
    bool any_list = false, all_weak = true;
    for (auto& t : a) {
      any_list |= t.is_list;
      all_weak &= t.weak;
    }
    NodeType out;
    out.is_list = any_list;
    out.weak = all_weak && !a.empty();
    const TypeRule rule = InfoOf(n.op).type;
    switch (rule) {
      case TypeRule::ColumnType:
        out = plan->columns[n.column].t;
        break;
      case TypeRule::LiteralType:
        out.weak = true;
        out.type = n.literal_kind == 0   ? VType::Bool
                   : n.literal_kind == 1 ? VType::I64
                   : n.literal_kind == 3 ? VType::U64
                                         : VType::F64;
        break;
      case TypeRule::Promote:
      case TypeRule::PromoteFloat:
        ARROW_RETURN_NOT_OK(no_bool());
        out.type = a.size() == 2 ? Promote(a[0], a[1]) : a[0].type;
        if (rule == TypeRule::PromoteFloat && !IsFloat(out.type)) out.type = VType::F64;
        break;
      case TypeRule::UnaryFloat:
        ARROW_RETURN_NOT_OK(no_bool());
        out.type = (a[0].type == VType::F32 && !a[0].weak) ? VType::F32 : VType::F64;
        break;
      case TypeRule::Compare:
        ARROW_RETURN_NOT_OK(no_bool());
        out.type = VType::Bool;
        break;
      case TypeRule::Logic:
        for (size_t k = 0; k < a.size(); ++k)
          if (a[k].type != VType::Bool)
            return Invalid(Describe(*plan, i) + ": needs bool operands, but argument " +
                           std::to_string(n.args[k]) + " is " + VTypeName(a[k].type));
        out.type = VType::Bool;
        break;
      case TypeRule::Choice:
        if (a[0].type != VType::Bool)
          return Invalid(Describe(*plan, i) + ": the condition must be bool, got " +
                         VTypeName(a[0].type));
        out.type = Promote(a[1], a[2]);
        break;
      case TypeRule::Masked:
        if (!a[0].is_list) return Invalid(Describe(*plan, i) + ": cannot mask an event-level value");
        if (!a[1].is_list || a[1].type != VType::Bool)
          return Invalid(Describe(*plan, i) + ": the mask must be a bool collection");
        out = a[0];
        out.weak = false;
        break;
      case TypeRule::Float64:
        ARROW_RETURN_NOT_OK(no_bool());
        out.type = VType::F64;
        break;
      case TypeRule::PerFirst:
      case TypeRule::PairOf:
        for (size_t k = 0; k < a.size(); ++k)
          if (!a[k].is_list)
            return Invalid(Describe(*plan, i) + ": pairs are made of collections, but argument " +
                           std::to_string(n.args[k]) + " has one value per event");
        out = a[n.op == Op::CrossSecond ? 1 : 0];
        if (rule == TypeRule::PerFirst) out.type = VType::Bool;
        out.weak = false;
        break;
      case TypeRule::CountOf:
      case TypeRule::AnyAll:
      case TypeRule::SumOf:
      case TypeRule::MeanOf:
      case TypeRule::ElementOf: {
        if (!a[0].is_list)
          return Invalid(Describe(*plan, i) + ": reduces a collection, but argument " +
                         std::to_string(n.args[0]) + " has one value per event");
        out.is_list = false;
        out.weak = false;
        const VType e = a[0].type;
        if (rule == TypeRule::CountOf) out.type = VType::I64;
        else if (rule == TypeRule::AnyAll) out.type = VType::Bool;
        else if (rule == TypeRule::SumOf) out.type = IsFloat(e) ? e : IsUnsigned(e) ? VType::U64 : VType::I64;
        else if (rule == TypeRule::MeanOf) out.type = VType::F64;  // np.mean of bools works too
        else out.type = e;
        break;
      }
    }
    n.t = out;
  }
  if (plan->filter >= 0) {
    const NodeType& f = plan->nodes[plan->filter].t;
    if (f.type != VType::Bool || f.is_list)
      return Invalid("the filter (node " + std::to_string(plan->filter) +
                     ") must be an event-level bool, got " + (f.is_list ? "a collection of " : "") +
                     VTypeName(f.type));
  }
  for (const AggSpec& g : plan->aggregations) {
    // x, y and the weight broadcast together (awkward's rule): a collection weight
    // needs a collection among x and y, whichever it is
    if (g.x < 0) continue;  // Count without x: nothing to broadcast (nodes[-1] was read here)
    const bool value_is_list = plan->nodes[g.x].t.is_list || (g.y >= 0 && plan->nodes[g.y].t.is_list);
    if (g.weight >= 0 && plan->nodes[g.weight].t.is_list && !value_is_list)
      return Invalid("aggregation '" + g.name + "': a collection weight for an event-level value");
  }
  return arrow::Status::OK();
}

}  // namespace skyhook
