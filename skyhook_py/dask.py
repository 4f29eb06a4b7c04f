"""dask-awkward over a Skyhook dataset: ``from_skyhook`` is to Skyhook what
``uproot.dask`` is to a ROOT file.

One dask partition per Skyhook partition that the planner keeps (event range and
statistics pruning happen before the graph is built).  Each partition is one Skyhook
query restricted to that partition's events, with the cut (``where``) pushed down into
the OSDs.  The IO function implements dask-awkward's column-projection protocol
(``ColumnProjectionMixin``): when the graph is optimised, dask-awkward reports which
fields it touches and only those columns are asked of the OSDs.

coffea NanoEvents as a dask collection (``events.Muon.pt``, cross-references,
behaviours, coffea's buffer-level projection): ``skyhook_py.coffea.events(dataset,
where=..., mode="dask")`` (skyhook_py/coffea_dask.py).

What this deliberately ignores: distributed schedulers in other processes (the IO
function holds the in-process Session; use the threaded or synchronous scheduler), and
repartitioning (a Skyhook partition is the unit of work).
"""

from __future__ import annotations

import threading

import awkward as ak
import dask_awkward as dak
from dask_awkward.lib.io.columnar import ColumnProjectionMixin

from .query import planner


class SkyhookPartitionReader(ColumnProjectionMixin):
    """The IO function of ``from_skyhook``: called with one (event_start, event_stop)."""

    def __init__(self, session, dataset, columns, where, expressions, records, pushdown,
                 language, form, lock):
        self.session, self.dataset = session, dataset
        self.columns = list(columns)
        self.where, self.expressions = where, dict(expressions or {})
        self.records, self.pushdown, self.language = records, pushdown, language
        self.form, self._lock = form, lock
        self.behavior, self.attrs = None, None
        self.use_optimization = True
        self.requested: list[list[str]] = []   # columns asked per call (for tests and logs)

    def _outputs_for(self, paths) -> list[str]:
        """Flat output names for dask-awkward field paths ("Muon.pt" -> "Muon_pt")."""
        wanted = set()
        names = self.columns + [n for n in self.expressions if n not in self.columns]
        for path in paths:
            if path in names:
                wanted.add(path)
                continue
            head, _, field = path.partition(".")
            if self.records:
                if field and f"{head}_{field}" in names:
                    wanted.add(f"{head}_{field}")
                    continue
                wanted.update(n for n in names if n.startswith(head + "_") or n == head)
        return [n for n in names if n in wanted]

    def project_columns(self, columns: frozenset[str]):
        outputs = self._outputs_for(columns)
        new = SkyhookPartitionReader(
            self.session, self.dataset, [c for c in self.columns if c in outputs], self.where,
            {k: v for k, v in self.expressions.items() if k in outputs}, self.records,
            self.pushdown, self.language, self.form, self._lock)
        new.form = _form_of(self.session, self.dataset, new.columns, new.expressions, records=self.records,
                            where=where_or_none(self.where), language=self.language)
        new.requested = self.requested
        return new

    def __call__(self, event_range):
        with self._lock:
            result = self.session.run(self.dataset, columns=self.columns, where=self.where,
                                      expressions=self.expressions or None, event_range=event_range,
                                      pushdown=self.pushdown, language=self.language)
        self.requested.append(self.columns + list(self.expressions))
        return result.to_awkward(records=self.records)


def where_or_none(where):
    return where if where else None


def _form_of(session, dataset, columns, expressions, *, records, where, language):
    from .session import empty_result

    m, query = session.build_query(dataset, columns=columns, where=where,
                                   expressions=expressions or None, language=language)
    table = empty_result(m, query)
    if records:
        from .query.records import zip_records

        return zip_records(table).layout.form
    return ak.from_arrow(table).layout.form


def from_skyhook(dataset: str, columns=None, where=None, *, expressions=None, session=None,
                 records: bool = False, pushdown: str = "auto", language: str = "cut",
                 event_range=None) -> dak.Array:
    """A lazy ``dask_awkward.Array`` of the events of ``dataset`` that pass ``where``.

    columns: the branches that may be read (default: all of the dataset); dask-awkward's
    optimisation then asks each partition only for those the graph uses.
    where: the cut, pushed down into the OSDs (any language Skyhook compiles).
    expressions: computed columns ``{name: expression}``, also evaluated in the OSDs.
    records: zip ``Muon_*`` into ``Muon`` records, as NanoEvents names them.
    session: a ``skyhook_py.Session`` (default ``skyhook_py.connect()``).
    """
    if session is None:
        from . import connect

        session = connect()
    m = session.manifest(dataset)
    if columns is None:
        columns = list(m.column_types()) if not expressions else []
    # the cut and the range decide which partitions are kept, before any column is chosen
    _, query = session.build_query(m, columns=list(columns), where=where, expressions=expressions,
                                   event_range=event_range, language=language)
    ranges = [(t.event_start, t.event_stop) for t in planner.plan(m, query, pushdown).tasks]
    form = _form_of(session, m, list(columns), expressions, records=records, where=where, language=language)
    io = SkyhookPartitionReader(session, dataset, columns, where, expressions, records, pushdown,
                                language, form, threading.Lock())
    if not ranges:  # nothing survives pruning: one empty partition keeps the array well-formed
        ranges = [(0, 0)]
    return dak.from_map(io, ranges, label=f"from-skyhook-{dataset}")
