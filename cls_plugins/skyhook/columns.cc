// Column conversion (columns.h): Arrow arrays of the partition to Values,
// and Values of the selected rows back to Arrow arrays for the reply.

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <arrow/util/bit_util.h>

#include "columns.h"

namespace skyhook {

namespace {

arrow::Status EInval(std::string msg) { return ErrnoStatus(EINVAL, std::move(msg)); }

arrow::Result<VType> VTypeOf(const arrow::DataType& t) {
  switch (t.id()) {
    case arrow::Type::BOOL: return VType::Bool;
    case arrow::Type::INT8: return VType::I8;
    case arrow::Type::INT16: return VType::I16;
    case arrow::Type::INT32: return VType::I32;
    case arrow::Type::INT64: return VType::I64;
    case arrow::Type::UINT8: return VType::U8;
    case arrow::Type::UINT16: return VType::U16;
    case arrow::Type::UINT32: return VType::U32;
    case arrow::Type::UINT64: return VType::U64;
    case arrow::Type::FLOAT: return VType::F32;
    case arrow::Type::DOUBLE: return VType::F64;
    default: return arrow::Status::NotImplemented(t.ToString());
  }
}

}  // namespace

arrow::Result<NodeType> ColumnTypeOf(const arrow::Field& f) {
  const arrow::DataType& t = *f.type();
  NodeType out;
  const arrow::DataType* elem = &t;
  if (t.id() == arrow::Type::LIST || t.id() == arrow::Type::LARGE_LIST ||
      t.id() == arrow::Type::FIXED_SIZE_LIST) {
    out.is_list = true;
    elem = t.field(0)->type().get();
  }
  auto vt = VTypeOf(*elem);
  if (!vt.ok())
    return EInval("column '" + f.name() + "' has type " + t.ToString() +
                  ", not a number, bool or a list of those");
  out.type = *vt;
  return out;
}

std::shared_ptr<arrow::DataType> ArrowTypeOf(VType t) {
  switch (t) {
    case VType::Bool: return arrow::boolean();
    case VType::I8: return arrow::int8();
    case VType::I16: return arrow::int16();
    case VType::I32: return arrow::int32();
    case VType::I64: return arrow::int64();
    case VType::U8: return arrow::uint8();
    case VType::U16: return arrow::uint16();
    case VType::U32: return arrow::uint32();
    case VType::U64: return arrow::uint64();
    case VType::F32: return arrow::float32();
    default: return arrow::float64();
  }
}

namespace {

// The elements of a primitive array as a Value's data and validity (zero copy
// for numbers; bools and validity bitmaps are unpacked to bytes).
arrow::Status PrimitiveInto(const arrow::Array& arr, VType t, Value* v, CallContext* ctx) {
  const auto& d = *arr.data();
  const int64_t n = arr.length();
  v->length = n;
  if (t == VType::Bool) {
    ARROW_ASSIGN_OR_RAISE(v->data, NewBuffer(std::max<int64_t>(n, 1), ctx));
    uint8_t* o = v->data->mutable_data();
    const uint8_t* bits = d.buffers[1] ? d.buffers[1]->data() : nullptr;
    for (int64_t i = 0; i < n; ++i) o[i] = bits ? arrow::bit_util::GetBit(bits, d.offset + i) : 0;
  } else {
    const int w = VTypeBytes(t);
    if (n == 0 || !d.buffers[1]) {
      ARROW_ASSIGN_OR_RAISE(v->data, NewBuffer(std::max<int64_t>(n, 1) * w, ctx));
      std::memset(v->data->mutable_data(), 0, static_cast<size_t>(std::max<int64_t>(n, 1) * w));
    } else {
      v->data = arrow::SliceBuffer(d.buffers[1], d.offset * w, n * w);
    }
  }
  if (arr.null_count() > 0)  // partitions never hold nulls; nulls come from the IR only
    return EInval("a column holds nulls, which partitions never do");
  return arrow::Status::OK();
}

}  // namespace

arrow::Result<Value> ColumnValue(const arrow::Array& arr, const ColumnRef& col, CallContext* ctx) {
  Value v;
  v.t = col.t;
  v.n_events = arr.length();
  if (!col.t.is_list) {
    ARROW_RETURN_NOT_OK(PrimitiveInto(arr, col.t.type, &v, ctx));
    return v;
  }
  if (arr.null_count() > 0)
    return EInval("column '" + col.name + "' holds null lists, which are not supported");
  const int64_t ne = arr.length();
  ARROW_ASSIGN_OR_RAISE(v.offsets, NewBuffer((ne + 1) * 8, ctx));
  int64_t* off = reinterpret_cast<int64_t*>(v.offsets->mutable_data());
  std::shared_ptr<arrow::Array> values;
  auto rebase = [&](auto* raw, const std::shared_ptr<arrow::Array>& child) {
    int64_t first = raw[0];
    for (int64_t e = 0; e <= ne; ++e) off[e] = static_cast<int64_t>(raw[e]) - first;
    values = child->Slice(first, off[ne]);
  };
  if (arr.type_id() == arrow::Type::LIST) {
    const auto& l = static_cast<const arrow::ListArray&>(arr);
    rebase(l.raw_value_offsets(), l.values());
  } else if (arr.type_id() == arrow::Type::LARGE_LIST) {
    const auto& l = static_cast<const arrow::LargeListArray&>(arr);
    rebase(l.raw_value_offsets(), l.values());
  } else {
    const auto& l = static_cast<const arrow::FixedSizeListArray&>(arr);
    const int64_t size = l.list_type()->list_size();
    for (int64_t e = 0; e <= ne; ++e) off[e] = e * size;
    values = l.values()->Slice((l.offset()) * size, ne * size);
  }
  ARROW_RETURN_NOT_OK(PrimitiveInto(*values, col.t.type, &v, ctx));
  return v;
}

arrow::Result<std::shared_ptr<arrow::Array>> ToArrow(const Value& v,
                                                     const std::vector<int64_t>& sel,
                                                     const std::shared_ptr<arrow::DataType>& type,
                                                     CallContext* ctx) {
  const VType t = v.t.type;
  const int w = VTypeBytes(t);
  // element indices to gather, and list offsets for a collection
  std::vector<int64_t> idx;
  std::shared_ptr<arrow::Buffer> offsets;
  if (v.t.is_list && !v.scalar) {
    ARROW_ASSIGN_OR_RAISE(offsets, NewBuffer((static_cast<int64_t>(sel.size()) + 1) * 4, ctx));
    int32_t* oo = reinterpret_cast<int32_t*>(offsets->mutable_data());
    const int64_t* off = v.offs();
    int64_t k = 0;
    oo[0] = 0;
    for (size_t i = 0; i < sel.size(); ++i) {
      for (int64_t j = off[sel[i]]; j < off[sel[i] + 1]; ++j) idx.push_back(j);
      k += off[sel[i] + 1] - off[sel[i]];
      if (k > INT32_MAX) return ErrnoStatus(EMSGSIZE, "output list of more than 2^31 elements");
      oo[i + 1] = static_cast<int32_t>(k);
    }
  } else {
    idx = sel;
  }
  const int64_t n = static_cast<int64_t>(idx.size());
  std::shared_ptr<arrow::Buffer> data, bitmap;
  int64_t nulls = 0;
  if (t == VType::Bool) {
    ARROW_ASSIGN_OR_RAISE(data, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    std::memset(data->mutable_data(), 0, static_cast<size_t>(data->size()));
    for (int64_t i = 0; i < n; ++i) {
      bool b = v.scalar ? v.ival != 0 : v.values<uint8_t>()[idx[i]] != 0;
      if (b) arrow::bit_util::SetBit(data->mutable_data(), i);
    }
  } else {
    ARROW_ASSIGN_OR_RAISE(data, NewBuffer(std::max<int64_t>(n, 1) * w, ctx));
    if (v.scalar) {
      Value one;
      ARROW_ASSIGN_OR_RAISE(one, Materialize(v, t, nullptr, 1, ctx));
      for (int64_t i = 0; i < n; ++i) std::memcpy(data->mutable_data() + i * w, one.data->data(), w);
    } else {
      const uint8_t* src = v.data->data();
      for (int64_t i = 0; i < n; ++i) std::memcpy(data->mutable_data() + i * w, src + idx[i] * w, w);
    }
  }
  if (v.valid && !v.scalar) {
    ARROW_ASSIGN_OR_RAISE(bitmap, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    std::memset(bitmap->mutable_data(), 0, static_cast<size_t>(bitmap->size()));
    const uint8_t* va = v.valid->data();
    for (int64_t i = 0; i < n; ++i) {
      if (va[idx[i]]) arrow::bit_util::SetBit(bitmap->mutable_data(), i);
      else ++nulls;
    }
    if (nulls == 0) bitmap.reset();
  }
  auto elems = arrow::ArrayData::Make(ArrowTypeOf(t), n, {bitmap, data}, nulls);
  if (!(v.t.is_list && !v.scalar)) return arrow::MakeArray(elems);
  auto list = arrow::ArrayData::Make(type, static_cast<int64_t>(sel.size()),
                                     {nullptr, offsets}, {elems}, 0);
  return arrow::MakeArray(list);
}

}  // namespace skyhook
