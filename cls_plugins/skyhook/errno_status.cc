// Errno carriers: an arrow::Status that carries the errno of the
// formats/README.md table (ErrnoStatus), and the one function that maps any
// Status to the negative errno a method returns (StatusToErrno).  Everything
// the kernel refuses goes through here; nothing else invents error codes.

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "kernel_internal.h"

namespace skyhook {

namespace {

class ErrnoDetail : public arrow::StatusDetail {
 public:
  explicit ErrnoDetail(int err) : err_(err) {}
  const char* type_id() const override { return "skyhook::errno"; }
  std::string ToString() const override { return "errno " + std::to_string(err_); }
  int err() const { return err_; }

 private:
  int err_;
};

int CarriedErrno(const arrow::Status& st) {
  auto d = st.detail();
  if (d && std::strcmp(d->type_id(), "skyhook::errno") == 0)
    return static_cast<const ErrnoDetail&>(*d).err();
  return 0;
}

}  // namespace

arrow::Status ErrnoStatus(int err, std::string message) {
  return arrow::Status(arrow::StatusCode::Invalid, std::move(message),
                       std::make_shared<ErrnoDetail>(err));
}

int StatusToErrno(const arrow::Status& status) {
  if (status.ok()) return 0;
  if (int e = CarriedErrno(status)) return -e;
  if (status.IsOutOfMemory()) return -ENOMEM;
  return -EIO;
}

arrow::Status AsBadMessage(const arrow::Status& st, const std::string& what) {
  if (st.ok() || CarriedErrno(st) != 0 || st.IsOutOfMemory()) return st;
  return ErrnoStatus(EBADMSG, what + ": " + st.ToString());
}

}  // namespace skyhook
