"""Pairs of objects and their kinematics, as the cut syntax and qastle spell them.

One language-independent piece of both frontends (formats/README.md "Pairs"):

- ``delta_phi(phi1, phi2)``: phi1 - phi2 wrapped into [-pi, pi) exactly as the
  ``vector`` library does it, ``(d + pi) % (2 pi) - pi`` with NumPy's ``%``; expanded
  to the IR's arithmetic (so float32 columns give float32, bit for bit NumPy);
- ``delta_r(eta1, phi1, eta2, phi2)``: ``sqrt(deta * deta + dphi * dphi)`` (vector
  writes ``**2``, which NumPy's ``power`` may round one float32 ulp away from ``x * x``);
- ``inv_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2)``: the IR's ``InvMass``
  (float64);
- ``pairs(Muon)`` / ``pairs(Muon, Muon_pt > 20)``: every pair (i < j) of a
  collection's objects (of those passing the mask), in ``ak.combinations(n=2)``
  order; ``cross(Muon, Jet)`` / ``cross(Muon, Jet, mask1, mask2)``: every (muon,
  jet), in ``ak.cartesian`` order.  Their fields are ``<field>1`` and ``<field>2``
  (``pairs(Muon).charge1``: the first muon's charge), and ``mass``, ``delta_r``,
  ``delta_phi``, ``delta_eta`` of the two; ``massless=True`` takes 0 as the mass
  (for a collection without a ``_mass`` column).  Each is a collection with one
  element per pair, so ``any``, ``count_nonzero``, ``firsts``, masks ... apply;
- ``cross_any(c)`` / ``cross_all(c)`` of a condition ``c`` on the pairs of ``cross(A, B)``:
  for each object of A, whether ``c`` holds for any / every object of B (``CrossAny`` /
  ``CrossAll``): jets away from every selected muon are
  ``Jet_pt[cross_all(cross(Jet, Muon, mask2=Muon_pt > 20).delta_r >= 0.4)]``.
"""

from __future__ import annotations

import dataclasses
import math

from ...errors import QueryError
from .. import ir

PI = math.pi

# the derived fields of a pair view
DERIVED = ("mass", "delta_r", "delta_phi", "delta_eta")


def delta_phi(phi1: ir.Expr, phi2: ir.Expr) -> ir.Expr:
    """phi1 - phi2 in [-pi, pi), as vector's ``deltaphi`` (its ``rectify``)."""
    d = ir.as_expr(phi1) - ir.as_expr(phi2)
    return (d + PI) % (2 * PI) - PI


def delta_r(eta1, phi1, eta2, phi2) -> ir.Expr:
    """sqrt(delta_eta**2 + delta_phi**2), as vector's ``deltaR``."""
    deta = ir.as_expr(eta1) - ir.as_expr(eta2)
    dphi = delta_phi(phi1, phi2)
    # x * x, not x ** 2: pow may round differently in NumPy and the C library, and a cut
    # on delta_r must select the same events in the OSD and in the reference evaluator
    return ir.call(ir.Op.Sqrt, deta * deta + dphi * dphi)


def inv_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2) -> ir.Expr:
    return ir.call(ir.Op.InvMass, pt1, eta1, phi1, m1, pt2, eta2, phi2, m2)


# name -> (number of arguments, expansion) of the kinematic functions
def _cross_of(p: ir.Expr) -> ir.Call | None:
    """The first CrossFirst/CrossSecond node in ``p`` (its arguments are the two collections)."""
    stack = [p]
    while stack:
        e = stack.pop()
        if isinstance(e, ir.Call):
            if e.op in (ir.Op.CrossFirst, ir.Op.CrossSecond):
                return e
            stack.extend(reversed(e.args))
    return None


def _per_first(op, name):
    def build(p):
        p = ir.as_expr(p)
        node = _cross_of(p)
        if node is None:
            raise QueryError(f"{name}() needs a condition on the pairs of cross(A, B) "
                             "(e.g. cross(Jet, Muon).delta_r > 0.4)")
        return ir.Call(op, (p, node.args[0], node.args[1]))
    return build


cross_any = _per_first(ir.Op.CrossAny, "cross_any")
cross_all = _per_first(ir.Op.CrossAll, "cross_all")

# (inv_mass is the IR operator InvMass: its spelling is in ir.OPS)
FUNCTIONS = {"delta_phi": (2, delta_phi), "delta_r": (4, delta_r),
             # per first object of cross(A, B): a bool collection shaped like A (jet cleaning)
             "cross_any": (1, cross_any), "cross_all": (1, cross_all)}
VIEWS = ("pairs", "cross")
# the field of the other collection of cross() whose list lengths CrossFirst/CrossSecond
# read (every NanoAOD collection has a pt)
COUNT_FIELD = "pt"


@dataclasses.dataclass(frozen=True)
class Member:
    """One side of the pairs: a collection and the mask of its objects kept (or None)."""

    collection: str
    mask: ir.Expr | None = None

    def field(self, name: str) -> ir.Expr:
        col = ir.Column(f"{self.collection}_{name}")
        return col if self.mask is None else ir.Call(ir.Op.Mask, (col, self.mask))


@dataclasses.dataclass(frozen=True)
class PairView:
    """``pairs(A)`` (one member) or ``cross(A, B)`` (two): fields become pair collections."""

    members: tuple
    massless: bool = False
    mask: ir.Expr | None = None   # pairs kept so far (qastle's Where over pairs)

    @property
    def is_cross(self) -> bool:
        return len(self.members) == 2

    def describe(self) -> str:
        return ("cross" if self.is_cross else "pairs") + "(" + ", ".join(m.collection for m in self.members) + ")"

    def side(self, name: str, which: int) -> ir.Expr:
        """Field ``name`` of the first (which=1) or second (2) object of every pair."""
        if self.is_cross:
            a, b = self.members
            # CrossFirst/CrossSecond take both collections: the other's pt gives its lengths
            if which == 1:
                return ir.Call(ir.Op.CrossFirst, (a.field(name), b.field(COUNT_FIELD)))
            return ir.Call(ir.Op.CrossSecond, (a.field(COUNT_FIELD), b.field(name)))
        op = ir.Op.PairFirst if which == 1 else ir.Op.PairSecond
        return ir.Call(op, (self.members[0].field(name),))

    def attribute(self, attr: str) -> ir.Expr:
        """``charge1``, ``pt2``, ``mass``, ``delta_r``, ``delta_phi``, ``delta_eta``."""
        if attr == "mass":
            m1 = ir.Literal(0.0) if self.massless else self.side("mass", 1)
            m2 = ir.Literal(0.0) if self.massless else self.side("mass", 2)
            return inv_mass(self.side("pt", 1), self.side("eta", 1), self.side("phi", 1), m1,
                            self.side("pt", 2), self.side("eta", 2), self.side("phi", 2), m2)
        if attr == "delta_r":
            return delta_r(self.side("eta", 1), self.side("phi", 1), self.side("eta", 2), self.side("phi", 2))
        if attr == "delta_phi":
            return delta_phi(self.side("phi", 1), self.side("phi", 2))
        if attr == "delta_eta":
            return self.side("eta", 1) - self.side("eta", 2)
        if len(attr) >= 2 and attr[-1] in "12":
            return self.side(attr[:-1], int(attr[-1]))
        raise QueryError(
            f"{self.describe()} has no field {attr!r}: write <field>1 or <field>2 for the first or "
            f"second object (e.g. pt1, charge2), or one of {', '.join(DERIVED)}")
