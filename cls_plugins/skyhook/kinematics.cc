// Kinematics of two objects that are not exact enough as a chain of the IR's
// element-wise operators on float32 columns: InvMass, the invariant mass of
// the sum of two four-vectors given as (pt, eta, phi, mass), computed in
// float64 the way skyhook_py's reference evaluator computes it, operation for
// operation (formats/README.md "Pairs"):
//   px = pt cos(phi), py = pt sin(phi), pz = pt sinh(eta),
//   E = sqrt(px^2 + py^2 + pz^2 + m^2) for each; then with the sums,
//   m^2 = E^2 - px^2 - py^2 - pz^2, mass = copysign(sqrt(|m^2|), m^2)
// (negative for a space-like sum, as the `vector` library's tau).

#include <cmath>

#include "eval_internal.h"

namespace skyhook {

arrow::Status EvalInvMass(const std::vector<Value>& m, Value* out, CallContext* ctx) {
  const int64_t n = out->length;
  ARROW_ASSIGN_OR_RAISE(out->data, NewBuffer(std::max<int64_t>(n, 1) * 8, ctx));
  double* o = reinterpret_cast<double*>(out->data->mutable_data());
  const double *pt1 = m[0].values<double>(), *eta1 = m[1].values<double>(),
               *phi1 = m[2].values<double>(), *m1 = m[3].values<double>(),
               *pt2 = m[4].values<double>(), *eta2 = m[5].values<double>(),
               *phi2 = m[6].values<double>(), *m2 = m[7].values<double>();
  for (int64_t i = 0; i < n; ++i) {
    const double px1 = pt1[i] * std::cos(phi1[i]), py1 = pt1[i] * std::sin(phi1[i]),
                 pz1 = pt1[i] * std::sinh(eta1[i]);
    const double px2 = pt2[i] * std::cos(phi2[i]), py2 = pt2[i] * std::sin(phi2[i]),
                 pz2 = pt2[i] * std::sinh(eta2[i]);
    const double e1 = std::sqrt(px1 * px1 + py1 * py1 + pz1 * pz1 + m1[i] * m1[i]);
    const double e2 = std::sqrt(px2 * px2 + py2 * py2 + pz2 * pz2 + m2[i] * m2[i]);
    const double e = e1 + e2, x = px1 + px2, y = py1 + py2, z = pz1 + pz2;
    const double mm = e * e - x * x - y * y - z * z;
    o[i] = std::copysign(std::sqrt(std::fabs(mm)), mm);
  }
  return arrow::Status::OK();
}

}  // namespace skyhook
