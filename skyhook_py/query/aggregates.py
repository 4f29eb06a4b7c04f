"""Merging the partial aggregates of many partitions, and turning them into final values.

Each partition's scan (in the OSD or by the reference evaluator) answers one
``PartialAggregate`` per aggregation; ``merge`` combines them as
formats/README.md says (counts, sums and bins add; min of mins, max of maxes)
and ``finalize`` gives the user's values: ints and floats, ``None`` where no
value entered, and ``Histogram`` objects.  Nothing here knows where the
partials came from.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import ir
from .results import PartialAggregate

AggKind = ir.AggKind


@dataclasses.dataclass
class Histogram:
    """A regular 1-D or 2-D histogram with under- and overflow bins.

    ``sumw``/``sumw2`` have shape (nx+2,) or (nx+2, ny+2): index 0 is the
    underflow and index -1 the overflow of each axis.
    """

    edges: tuple          # one np.ndarray of bins+1 edges per axis
    sumw: np.ndarray
    sumw2: np.ndarray
    count: int = 0        # entries filled (weights ignored)

    @property
    def values(self) -> np.ndarray:
        """The inner bins (without under/overflow)."""
        return self.sumw[(slice(1, -1),) * len(self.edges)]

    @property
    def variances(self) -> np.ndarray:
        return self.sumw2[(slice(1, -1),) * len(self.edges)]

    def render(self, width: int = 40) -> str:
        """A short text picture: range, entries, under/overflow and, for 1-D, one bar a bin."""
        lines = [f"{len(self.edges)}-D histogram, {self.count:,} entries, "
                 f"sum of weights {float(self.sumw.sum()):,.6g}"]
        if len(self.edges) != 1:
            return lines[0] + f", shape {self.values.shape}"
        e, v = self.edges[0], self.values
        lines[0] += f", underflow {self.sumw[0]:,.6g}, overflow {self.sumw[-1]:,.6g}"
        top = float(v.max()) if v.size and v.max() > 0 else 1.0
        for lo, hi, x in zip(e[:-1], e[1:], v):
            lines.append(f"  [{lo:>9.4g}, {hi:>9.4g})  {x:>12,.6g}  {'#' * int(round(width * x / top))}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain JSON-able data: edges per axis, inner values and variances, under- and
        overflow included in ``sumw``/``sumw2`` (index 0 and -1 of each axis)."""
        return {"edges": [e.tolist() for e in self.edges], "values": self.values.tolist(),
                "variances": self.variances.tolist(), "sumw": self.sumw.tolist(),
                "sumw2": self.sumw2.tolist(), "entries": int(self.count)}

    def to_numpy(self):
        """(values, edges...) like ``np.histogram``/``np.histogram2d`` return them."""
        return (self.values, *self.edges)

    def to_hist(self):
        """A ``hist.Hist`` with weight storage (needs the optional ``hist`` package)."""
        try:
            import hist
        except ImportError as e:
            raise ImportError("Histogram.to_hist() needs the 'hist' package (pip install hist)") from e
        axes = [hist.axis.Regular(len(e) - 1, e[0], e[-1], name=f"axis{i}") for i, e in enumerate(self.edges)]
        h = hist.Hist(*axes, storage=hist.storage.Weight())
        view = h.view(flow=True)
        view.value = self.sumw
        view.variance = self.sumw2
        return h


def _type_name(p: PartialAggregate) -> str:
    return "uint64" if p.is_unsigned else "integer" if p.is_integer else "float"


def _merge_two(a: PartialAggregate, b: PartialAggregate) -> PartialAggregate:
    if (a.name, a.kind) != (b.name, b.kind):
        raise ValueError(f"cannot merge aggregate {a.name!r} ({a.kind.name}) with {b.name!r} ({b.kind.name})")
    out = dataclasses.replace(a)
    out.count = a.count + b.count
    if a.kind in (AggKind.Hist1D, AggKind.Hist2D):
        if len(a.sumw) != len(b.sumw):
            raise ValueError(f"histogram {a.name!r}: partitions disagree on the bins "
                             f"({len(a.sumw)} and {len(b.sumw)})")
        out.sumw = (np.asarray(a.sumw) + np.asarray(b.sumw)).tolist()
        out.sumw2 = (np.asarray(a.sumw2) + np.asarray(b.sumw2)).tolist()
        return out
    if a.kind == AggKind.Count:
        return out
    # a partition where no value entered says nothing about the min/max/sum
    if b.count == 0:
        out.count = a.count
        return out
    if a.count == 0:
        return dataclasses.replace(b)
    if a.is_integer != b.is_integer or a.is_unsigned != b.is_unsigned:
        raise ValueError(f"aggregate {a.name!r}: partitions disagree on its type "
                         f"({_type_name(a)} and {_type_name(b)})")
    if a.kind in (AggKind.Sum, AggKind.Mean):
        # 64-bit wrap like the evaluators: uint64 for uint64 values, two's complement else
        if a.is_unsigned:
            out.int_value = (a.int_value + b.int_value) % 2**64
        else:
            out.int_value = (a.int_value + b.int_value + 2**63) % 2**64 - 2**63
        out.float_value = a.float_value + b.float_value
    elif a.kind == AggKind.Min:
        out.int_value, out.float_value = min(a.int_value, b.int_value), min(a.float_value, b.float_value)
    elif a.kind == AggKind.Max:
        out.int_value, out.float_value = max(a.int_value, b.int_value), max(a.float_value, b.float_value)
    return out


def merge(partials_per_partition) -> list[PartialAggregate]:
    """One merged PartialAggregate per aggregation, in the order of the first partition."""
    merged: dict = {}
    for partials in partials_per_partition:
        for p in partials:
            merged[p.name] = p if p.name not in merged else _merge_two(merged[p.name], p)
    return list(merged.values())


def finalize(merged, aggregations) -> dict:
    """name -> final value (int, float, None or Histogram) for each aggregation of the query."""
    by_name = {p.name: p for p in merged}
    out = {}
    for a in aggregations:
        p = by_name.get(a.name) or PartialAggregate(name=a.name, kind=a.kind)
        if a.kind == AggKind.Count:
            out[a.name] = p.count
        elif a.kind == AggKind.Sum:
            out[a.name] = p.int_value if p.is_integer else (p.float_value if p.count else 0)
        elif a.kind in (AggKind.Min, AggKind.Max):
            out[a.name] = None if p.count == 0 else (p.int_value if p.is_integer else p.float_value)
        elif a.kind == AggKind.Mean:
            total = p.int_value if p.is_integer else p.float_value
            out[a.name] = None if p.count == 0 else total / p.count
        else:
            axes = [a.x_axis] + ([a.y_axis] if a.kind == AggKind.Hist2D else [])
            shape = tuple(ax.bins + 2 for ax in axes)
            size = int(np.prod(shape))
            sumw = np.zeros(size) if p.sumw is None else np.asarray(p.sumw, np.float64)
            sumw2 = np.zeros(size) if p.sumw2 is None else np.asarray(p.sumw2, np.float64)
            out[a.name] = Histogram(
                edges=tuple(np.linspace(ax.low, ax.high, ax.bins + 1) for ax in axes),
                sumw=sumw.reshape(shape), sumw2=sumw2.reshape(shape), count=p.count,
            )
    return out
