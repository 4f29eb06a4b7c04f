// The operators of the expression IR: one row per value of `enum Op` in
// formats/skyhook_scan.fbs, and the only place where the kernel says what an
// operator is.  The enum and its names come from the flatc-generated header
// (skyhook::fb::Op, EnumNameOp); request decoding (arity), static typing
// (result-type rule), the evaluator (kind) and the reply schema (nulls) look
// operators up here instead of testing ranges of enum values.
//
// Appending an `Op` to the schema without a row here fails to compile (the
// static_asserts below).  formats/README.md "Adding an operator" lists the
// other files a new operator touches; `skyhook_scan_local --list-ops` prints
// this table for the Python side's test.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "skyhook_scan_generated.h"

namespace skyhook {

using Op = fb::Op;

// What an operator is, in the words of skyhook_py's operator table.
enum class OpKind : uint8_t {
  Leaf,           // Column, Literal
  Arithmetic,     // element-wise, numbers in, numbers out
  Comparison,     // element-wise, numbers in, bool out
  Logical,        // element-wise, bools in, bool out
  Math,           // element-wise functions
  Choice,         // Where
  Mask,           // Mask
  Reduction,      // a collection to one value per event
  ElementAccess,  // one element of a collection per event, null when out of range
  Pairs,          // pairs of objects: a collection of one element per pair (pairs.cc)
};

// How TypeCheck (typecheck.cc) derives a node's type from its arguments'.
enum class TypeRule : uint8_t {
  ColumnType,    // the column's type in the partition's schema
  LiteralType,   // bool / int64 / float64 by literal_kind, weak
  Promote,       // numbers only; NumPy promotion of the operands (one operand: its type)
  PromoteFloat,  // numbers only; as Promote, then float64 unless already a float
  UnaryFloat,    // numbers only; float32 stays float32 (a strong one), else float64
  Compare,       // numbers only; bool
  Logic,         // bools only; bool
  Choice,        // bool condition; the promotion of the two choices
  Masked,        // a collection and a bool collection; the collection's type
  CountOf,       // a collection; int64
  AnyAll,        // a collection; bool
  SumOf,         // a collection; float stays, unsigned -> uint64, else int64
  MeanOf,        // a collection; float64
  ElementOf,     // a collection; its element type
  Float64,       // numbers only; float64 (InvMass computes in float64)
  PerFirst,      // collections only; a bool collection shaped like argument 1 (CrossAny/All)
  PairOf,        // collections only; a collection of the paired argument's type
                 // (PairFirst/PairSecond/CrossFirst: argument 0, CrossSecond: argument 1)
};

// Whether a node's value may hold nulls (the reply schema's nullability, as
// skyhook_py's reference evaluator declares it).
enum class Nulls : uint8_t {
  Propagate,  // null where an argument is null
  Never,      // counts and booleans of a collection: never null
  Maybe,      // null for an empty collection or an index out of range
};

struct OpInfo {
  Op op;
  int arity;
  OpKind kind;
  TypeRule type;
  Nulls nulls;
};

namespace op_table {
using K = OpKind;
using T = TypeRule;
using N = Nulls;
inline constexpr OpInfo kRows[] = {
    {Op::Column, 0, K::Leaf, T::ColumnType, N::Propagate},
    {Op::Literal, 0, K::Leaf, T::LiteralType, N::Propagate},
    {Op::Add, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Sub, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Mul, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Div, 2, K::Arithmetic, T::PromoteFloat, N::Propagate},
    {Op::FloorDiv, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Mod, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Pow, 2, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Neg, 1, K::Arithmetic, T::Promote, N::Propagate},
    {Op::Eq, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::Ne, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::Lt, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::Le, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::Gt, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::Ge, 2, K::Comparison, T::Compare, N::Propagate},
    {Op::And, 2, K::Logical, T::Logic, N::Propagate},
    {Op::Or, 2, K::Logical, T::Logic, N::Propagate},
    {Op::Not, 1, K::Logical, T::Logic, N::Propagate},
    {Op::Abs, 1, K::Math, T::Promote, N::Propagate},
    {Op::Sqrt, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Exp, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Log, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Sin, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Cos, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Tan, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Sinh, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Cosh, 1, K::Math, T::UnaryFloat, N::Propagate},
    {Op::Arctan2, 2, K::Math, T::PromoteFloat, N::Propagate},
    {Op::Hypot, 2, K::Math, T::PromoteFloat, N::Propagate},
    {Op::Where, 3, K::Choice, T::Choice, N::Propagate},
    {Op::Mask, 2, K::Mask, T::Masked, N::Propagate},
    {Op::Count, 1, K::Reduction, T::CountOf, N::Never},
    {Op::CountNonzero, 1, K::Reduction, T::CountOf, N::Never},
    {Op::Sum, 1, K::Reduction, T::SumOf, N::Never},
    {Op::Min, 1, K::Reduction, T::ElementOf, N::Maybe},
    {Op::Max, 1, K::Reduction, T::ElementOf, N::Maybe},
    {Op::Mean, 1, K::Reduction, T::MeanOf, N::Maybe},
    {Op::Any, 1, K::Reduction, T::AnyAll, N::Never},
    {Op::All, 1, K::Reduction, T::AnyAll, N::Never},
    {Op::First, 1, K::ElementAccess, T::ElementOf, N::Maybe},
    {Op::Last, 1, K::ElementAccess, T::ElementOf, N::Maybe},
    {Op::Index, 1, K::ElementAccess, T::ElementOf, N::Maybe},
    {Op::PairFirst, 1, K::Pairs, T::PairOf, N::Propagate},
    {Op::PairSecond, 1, K::Pairs, T::PairOf, N::Propagate},
    {Op::CrossFirst, 2, K::Pairs, T::PairOf, N::Propagate},
    {Op::CrossSecond, 2, K::Pairs, T::PairOf, N::Propagate},
    {Op::InvMass, 8, K::Math, T::Float64, N::Propagate},
    {Op::CrossAny, 3, K::Pairs, T::PerFirst, N::Never},
    {Op::CrossAll, 3, K::Pairs, T::PerFirst, N::Never},
};

// Number of values of the generated enum (values are appended, never skipped).
inline constexpr size_t kEnumSize = static_cast<size_t>(Op::MAX) + 1;
static_assert(std::extent_v<std::remove_reference_t<decltype(fb::EnumValuesOp())>> == kEnumSize,
              "fb::Op has gaps: the operator table assumes values 0..MAX");

constexpr bool RowsInEnumOrder() {
  for (size_t i = 0; i < std::size(kRows); ++i)
    if (static_cast<size_t>(kRows[i].op) != i) return false;
  return true;
}
}  // namespace op_table

static_assert(std::size(op_table::kRows) == op_table::kEnumSize,
              "formats/skyhook_scan.fbs has an Op without a row in the operator table "
              "(cls_plugins/skyhook/op_table.h), or a row too many");
static_assert(op_table::RowsInEnumOrder(),
              "the operator table's rows must follow enum Op, one row per value");

inline constexpr int kMaxOp = static_cast<int>(Op::MAX);

// The row of `op`, which must be a value of the enum (request decoding checks).
constexpr const OpInfo& InfoOf(Op op) { return op_table::kRows[static_cast<size_t>(op)]; }
constexpr int Arity(Op op) { return InfoOf(op).arity; }
constexpr OpKind KindOf(Op op) { return InfoOf(op).kind; }
constexpr bool IsComparison(Op op) { return KindOf(op) == OpKind::Comparison; }
constexpr bool IsReduction(Op op) { return KindOf(op) == OpKind::Reduction; }
constexpr bool IsElementAccess(Op op) { return KindOf(op) == OpKind::ElementAccess; }

// The name of `op` as spelled in formats/skyhook_scan.fbs ("?" when not an Op).
inline const char* OpName(Op op) {
  const char* name = fb::EnumNameOp(op);
  return name[0] != '\0' ? name : "?";
}
// The kind as skyhook_py spells it (`skyhook_scan_local --list-ops`).
constexpr const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::Leaf: return "leaf";
    case OpKind::Arithmetic: return "arithmetic";
    case OpKind::Comparison: return "comparison";
    case OpKind::Logical: return "logical";
    case OpKind::Math: return "math";
    case OpKind::Choice: return "choice";
    case OpKind::Mask: return "mask";
    case OpKind::Reduction: return "reduction";
    case OpKind::ElementAccess: return "element_access";
    case OpKind::Pairs: return "pairs";
  }
  return "?";
}

}  // namespace skyhook
