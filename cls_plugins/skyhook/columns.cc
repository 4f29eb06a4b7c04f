// Column conversion (columns.h): Arrow arrays of the partition to Values,
// and Values of the selected rows back to Arrow arrays for the reply.

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <arrow/util/bit_util.h>
#include <arrow/util/bitmap_ops.h>
#include <climits>

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

namespace {

arrow::Status Corrupt(const std::string& what) { return arrow::Status::Invalid(what); }

// The full checks of one array of a fixed-width type: its null count against its bitmap.
arrow::Status ValidateNullCount(const arrow::ArrayData& d) {
  if (d.buffers.empty() || !d.buffers[0]) {
    if (d.null_count > 0) return Corrupt("null count without a validity bitmap");
    return arrow::Status::OK();
  }
  const int64_t set = arrow::internal::CountSetBits(d.buffers[0]->data(), d.offset, d.length);
  if (d.length - set != d.null_count)
    return Corrupt("null count " + std::to_string(d.null_count) + " does not match the bitmap's " +
                   std::to_string(d.length - set));
  return arrow::Status::OK();
}

// Offsets [offset, offset + length] of a list: non-negative, non-decreasing, at
// most the element count.  One pass without branches (vectorised).
template <typename O>
arrow::Status ValidateOffsets(const arrow::ArrayData& d, int64_t elements) {
  const O* o = d.GetValues<O>(1);
  const int64_t n = d.length;
  if (o == nullptr) return n == 0 ? arrow::Status::OK() : Corrupt("list without offsets");
  uint32_t bad = o[0] < 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(o[i + 1] < o[i]);
  if (bad != 0) return Corrupt("list offsets negative or decreasing");
  if (static_cast<int64_t>(o[n]) > elements)
    return Corrupt("list offset " + std::to_string(o[n]) + " past the " + std::to_string(elements) +
                   " elements");
  return arrow::Status::OK();
}

// The element types of formats/README.md "Columns".
bool FixedWidthNumber(arrow::Type::type id) {
  switch (id) {
    case arrow::Type::BOOL: case arrow::Type::INT8: case arrow::Type::INT16:
    case arrow::Type::INT32: case arrow::Type::INT64: case arrow::Type::UINT8:
    case arrow::Type::UINT16: case arrow::Type::UINT32: case arrow::Type::UINT64:
    case arrow::Type::FLOAT: case arrow::Type::DOUBLE:
      return true;
    default:
      return false;
  }
}

// Buffer i of `d` holds `width`-byte values: its address must be a multiple of the
// width (the IPC format aligns every buffer to 8 bytes; a corrupted body offset
// need not, and the kernels read through typed pointers).
arrow::Status CheckAligned(const arrow::ArrayData& d, size_t i, int width) {
  if (width <= 1 || d.buffers.size() <= i || !d.buffers[i]) return arrow::Status::OK();
  if (reinterpret_cast<uintptr_t>(d.buffers[i]->data()) % static_cast<uintptr_t>(width) != 0)
    return Corrupt("buffer " + std::to_string(i) + " of a " + d.type->ToString() +
                   " array is not aligned to " + std::to_string(width) + " bytes");
  return arrow::Status::OK();
}

int ValueWidth(const arrow::DataType& t) {
  return t.id() == arrow::Type::BOOL ? 1 : t.byte_width();
}

arrow::Status ValidateColumn(const arrow::Array& arr) {
  const arrow::ArrayData& d = *arr.data();
  const arrow::Type::type id = d.type->id();
  if (FixedWidthNumber(id)) {
    ARROW_RETURN_NOT_OK(CheckAligned(d, 1, ValueWidth(*d.type)));
    return ValidateNullCount(d);
  }
  if ((id == arrow::Type::LIST || id == arrow::Type::LARGE_LIST || id == arrow::Type::FIXED_SIZE_LIST) &&
      d.child_data.size() == 1 && FixedWidthNumber(d.child_data[0]->type->id())) {
    ARROW_RETURN_NOT_OK(ValidateNullCount(d));
    const arrow::ArrayData& child = *d.child_data[0];
    if (id != arrow::Type::FIXED_SIZE_LIST)
      ARROW_RETURN_NOT_OK(CheckAligned(d, 1, id == arrow::Type::LIST ? 4 : 8));
    ARROW_RETURN_NOT_OK(CheckAligned(child, 1, ValueWidth(*child.type)));
    if (id == arrow::Type::LIST) ARROW_RETURN_NOT_OK(ValidateOffsets<int32_t>(d, child.length));
    if (id == arrow::Type::LARGE_LIST) ARROW_RETURN_NOT_OK(ValidateOffsets<int64_t>(d, child.length));
    return ValidateNullCount(child);
  }
  return arr.ValidateFull();
}

}  // namespace

arrow::Status ValidateBatch(const arrow::RecordBatch& batch) {
  ARROW_RETURN_NOT_OK(batch.Validate());  // structure: lengths, buffer sizes, types
  for (const auto& column : batch.columns()) ARROW_RETURN_NOT_OK(ValidateColumn(*column));
  return arrow::Status::OK();
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

arrow::Result<Value> ColumnValue(const std::shared_ptr<arrow::Array>& array, const ColumnRef& col,
                                 bool values_needed, CallContext* ctx) {
  const arrow::Array& arr = *array;
  Value v;
  v.t = col.t;
  v.n_events = arr.length();
  v.arrow = array;
  if (!values_needed) {
    if (arr.null_count() > 0)
      return EInval("column '" + col.name + "' holds nulls, which partitions never do");
    if (col.t.is_list) {
      const auto& child = *arr.data()->child_data[0];
      if (child.GetNullCount() > 0)
        return EInval("column '" + col.name + "' holds nulls, which partitions never do");
    }
    v.length = col.t.is_list ? 0 : arr.length();
    return v;
  }
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

namespace {

// A list array of `type` over int32 offsets and an element array.
std::shared_ptr<arrow::Array> ListArrayOf(const std::shared_ptr<arrow::DataType>& type, int64_t n,
                                          std::shared_ptr<arrow::Buffer> offsets,
                                          std::shared_ptr<arrow::ArrayData> elems) {
  return arrow::MakeArray(arrow::ArrayData::Make(type, n, {nullptr, std::move(offsets)},
                                                 {std::move(elems)}, 0));
}

arrow::Status TooLong() { return ErrnoStatus(EMSGSIZE, "output list of more than 2^31 elements"); }

// A column of the partition as the reply's array: the same buffers, zero
// copy; only large_list and fixed_size_list offsets are made (int32).  The
// IPC writer rebases sliced offsets and slices the elements itself.
arrow::Result<std::shared_ptr<arrow::Array>> PassThrough(const arrow::Array& arr,
                                                         const std::shared_ptr<arrow::DataType>& type,
                                                         CallContext* ctx) {
  const int64_t n = arr.length();
  switch (arr.type_id()) {
    case arrow::Type::LIST: {  // the output type names its field "item": same buffers, that type
      auto data = arr.data()->Copy();
      data->type = type;
      return arrow::MakeArray(std::move(data));
    }
    case arrow::Type::LARGE_LIST: {
      const auto& l = static_cast<const arrow::LargeListArray&>(arr);
      const int64_t* raw = l.raw_value_offsets();
      const int64_t first = raw[0];
      if (raw[n] - first > INT32_MAX) return TooLong();
      ARROW_ASSIGN_OR_RAISE(auto offsets, NewBuffer((n + 1) * 4, ctx));
      int32_t* o = reinterpret_cast<int32_t*>(offsets->mutable_data());
      for (int64_t e = 0; e <= n; ++e) o[e] = static_cast<int32_t>(raw[e] - first);
      return ListArrayOf(type, n, std::move(offsets), l.values()->Slice(first, raw[n] - first)->data());
    }
    case arrow::Type::FIXED_SIZE_LIST: {
      const auto& l = static_cast<const arrow::FixedSizeListArray&>(arr);
      const int64_t size = l.list_type()->list_size();
      if (n * size > INT32_MAX) return TooLong();
      ARROW_ASSIGN_OR_RAISE(auto offsets, NewBuffer((n + 1) * 4, ctx));
      int32_t* o = reinterpret_cast<int32_t*>(offsets->mutable_data());
      for (int64_t e = 0; e <= n; ++e) o[e] = static_cast<int32_t>(e * size);
      return ListArrayOf(type, n, std::move(offsets), l.values()->Slice(l.offset() * size, n * size)->data());
    }
    default:  // numbers and bools: the output type is the column's
      return arrow::MakeArray(arr.data());
  }
}

// uint8 0/1 values as a bitmap; returns the number of zero bytes.
int64_t PackBits(const uint8_t* bytes, int64_t n, uint8_t* bitmap) {
  int64_t zeros = 0;
  const int64_t whole = n / 8;
  for (int64_t k = 0; k < whole; ++k) {
    const uint8_t* b = bytes + 8 * k;
    uint8_t byte = 0;
    for (int j = 0; j < 8; ++j) byte |= static_cast<uint8_t>((b[j] != 0) << j);
    bitmap[k] = byte;
    zeros += 8 - __builtin_popcount(byte);
  }
  if (n % 8) {
    uint8_t byte = 0;
    for (int64_t j = 0; j < n % 8; ++j) byte |= static_cast<uint8_t>((bytes[8 * whole + j] != 0) << j);
    bitmap[whole] = byte;
    zeros += n % 8 - __builtin_popcount(byte);
  }
  return zeros;
}

}  // namespace

arrow::Result<std::shared_ptr<arrow::Array>> ToArrow(const Value& v, int64_t n_rows,
                                                     const std::shared_ptr<arrow::DataType>& type,
                                                     CallContext* ctx) {
  if (v.arrow) return PassThrough(*v.arrow, type, ctx);
  const VType t = v.t.type;
  const int w = VTypeBytes(t);
  const bool list = v.t.is_list && !v.scalar;
  std::shared_ptr<arrow::Buffer> offsets;
  int64_t n = n_rows;  // elements
  if (list) {
    const int64_t* off = v.offs();  // start at 0 (Value), non-decreasing
    n = off[n_rows];
    if (n > INT32_MAX) return TooLong();
    ARROW_ASSIGN_OR_RAISE(offsets, NewBuffer((n_rows + 1) * 4, ctx));
    int32_t* oo = reinterpret_cast<int32_t*>(offsets->mutable_data());
    for (int64_t e = 0; e <= n_rows; ++e) oo[e] = static_cast<int32_t>(off[e]);
  }
  Value elems = v;
  if (v.scalar) {
    ARROW_ASSIGN_OR_RAISE(elems, Materialize(v, t, nullptr, n, ctx));
  }
  std::shared_ptr<arrow::Buffer> data, bitmap;
  int64_t nulls = 0;
  if (t == VType::Bool) {
    ARROW_ASSIGN_OR_RAISE(data, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    data->mutable_data()[data->size() - 1] = 0;
    PackBits(elems.data->data(), n, data->mutable_data());
  } else {
    data = arrow::SliceBuffer(elems.data, 0, n * w);  // the value's own buffer
  }
  if (v.valid && !v.scalar) {
    ARROW_ASSIGN_OR_RAISE(bitmap, NewBuffer(arrow::bit_util::BytesForBits(n) + 1, ctx));
    bitmap->mutable_data()[bitmap->size() - 1] = 0;
    nulls = PackBits(v.valid->data(), n, bitmap->mutable_data());
    if (nulls == 0) bitmap.reset();
  }
  auto elem_data = arrow::ArrayData::Make(ArrowTypeOf(t), n, {bitmap, data}, nulls);
  if (!list) return arrow::MakeArray(elem_data);
  return ListArrayOf(type, n_rows, std::move(offsets), std::move(elem_data));
}

}  // namespace skyhook
