"""coffea over Skyhook: NanoEvents (coffea's NanoAOD schema) built from Skyhook answers,
and a processor runner that pushes the cut and the columns the processor touches down
into the OSDs.

``events(dataset, columns=None, where=..., mode="eager")`` gives coffea NanoEvents of the
events that pass ``where`` (``events.Muon.pt``, ``events.Jet.matched_muons`` and the
other cross-references whose index branches are among the columns), built with coffea's
own ``NanoEventsFactory.from_preloaded`` from one pushdown query.  Counters (``nMuon``)
and the event IDs NanoAODSchema requires are added to the columns asked.

``events(..., mode="dask")`` is coffea's dask mode: a ``dask_awkward.Array`` of NanoEvents
(built by ``NanoEventsFactory`` in ``"dask"`` mode with a Skyhook IO function in place of
``uproot.dask``), one dask partition per Skyhook partition the planner keeps.  Its IO
function implements dask-awkward's buffer projection the way uproot's does: when the
graph is optimised, the buffers it touches are mapped back to NanoAOD branches (through
the ``!load`` instructions of coffea's form keys) and only those branches are asked of
the OSDs (``dak.necessary_columns`` reports them).

``columns_touched(processor, dataset)`` finds the branches a processor (or any function
of the events) touches without reading data: it runs ``process`` once on zero-length
NanoEvents built from the dataset's schema, traced with coffea's
``coffea.nanoevents.trace.trace`` (awkward's typetracer; a length-zero array when the
processor does something a typetracer cannot, such as filling a histogram).

``run(processor, dataset, where=...)`` runs a ``coffea.processor.ProcessorABC`` over
every Skyhook partition kept by the planner, in coffea's idiom (``process(events)`` per
chunk, outputs merged with ``coffea.processor.accumulate``, then ``postprocess``); each
chunk is one pushdown query of the columns found by ``columns_touched`` (or of
``columns`` when given).

What this deliberately ignores: executors that ship work to other processes (the
Session is in-process; dask mode wants the threaded or synchronous scheduler), and
branches a processor reaches only through data-dependent Python control flow that the
zero-length trace does not take (name them with ``columns=``).
"""

from __future__ import annotations

import awkward as ak

from .query import planner


def _plain(array):
    """Arrow answers carry option types (nullable fields) with no nulls in them: NanoEvents
    wants plain numbers and lists, as uproot gives them."""
    return _strip_options(array)


def _strip_options(array):
    """Option types without nulls removed, list offsets as int64 (what uproot gives and
    NanoAODSchema's zipping expects)."""
    def strip(layout, continuation, **kwargs):
        if layout.is_option and not ak.any(ak.is_none(ak.Array(layout), axis=0)):
            return ak.transform(strip, layout.project(), highlevel=False)
        if layout.is_list:
            lo = layout.to_ListOffsetArray64(True)
            content = ak.transform(strip, lo.content, highlevel=False)
            return ak.contents.ListOffsetArray(lo.offsets, content, parameters=lo.parameters)
        return None

    return ak.transform(strip, array)


def _forms(session, dataset):
    from .session import empty_result

    m, q = session.build_query(dataset)
    empty = empty_result(m, q)
    return {name: _strip_options(ak.from_arrow(empty.column(name))).layout.form for name in empty.column_names}


def _counters(forms, names):
    """NanoAODSchema builds collections from their counters: add ``nX`` for each ``X_f``."""
    out = list(names)
    for n in names:
        counter = "n" + n.partition("_")[0]
        if "_" in n and counter in forms and counter not in out:
            out.append(counter)
    return out


EVENT_IDS = ("run", "luminosityBlock", "event")


class _Source(dict):
    """The Mapping of branch -> awkward array that ``from_preloaded`` reads, with the
    ``metadata`` (uuid, num_rows, object_path) it wants."""


def _columns_for(forms, columns):
    names = list(dict.fromkeys([c for c in EVENT_IDS if c in forms] + list(columns)))
    unknown = [c for c in names if c not in forms]
    if unknown:
        from .errors import UnknownColumnError, closest_matches

        raise UnknownColumnError(unknown[0], closest_matches(unknown[0], forms), where="coffea columns")
    return _counters(forms, names)


def _reader(session, dataset, columns, where, schemaclass, metadata, language, pushdown, all_columns=True):
    """The IO function of coffea_dask, used eagerly too: the schema is applied to the form
    of every column of the dataset (so that NanoEvents have all their fields and
    behaviours, as with uproot), and only ``columns`` are read; the others are
    placeholders, which fail if touched."""
    import threading

    from .coffea_dask import SkyhookEventsReader, SkyhookFormMapping

    source = _empty_source(session, dataset)
    names = list(source) if all_columns else list(columns)
    flat = ak.Array({n: source[n] for n in names}).layout.form
    md = dict(metadata or {}, dataset=dataset, filename=f"skyhook://{dataset}")
    expected_form, info = SkyhookFormMapping(schemaclass, md)(flat)
    return SkyhookEventsReader(session, dataset, columns, where, language, pushdown, expected_form, info,
                               threading.Lock(), [])


def _unread_branch_error(e, reader):
    """awkward's error for a touched placeholder (a branch not among the columns read),
    as a QueryError naming the branch; None for any other error."""
    import re

    from .errors import QueryError

    m = re.search(r"buffer at '([^']+)', but it exists only as a placeholder", str(e))
    if not m:
        return None
    names = sorted(reader.form_mapping_info.keys_for_buffer_keys({m.group(1)})) or [m.group(1)]
    err = QueryError(f"the processor touched {', '.join(names)}, which is not among the columns read "
                     f"({len(reader.keys)} named): add it to columns=, or leave columns out to have "
                     f"Skyhook find the columns the processor touches")
    err.__cause__ = e
    return err


def _chunk(reader, event_range):
    ev = reader(event_range)
    ev.attrs["@original_array"] = ev   # cross-references resolve against the chunk itself
    return ev


def _dataset_forms(session, dataset):
    m = session.manifest(dataset)
    return m, {name: None for name in m.column_types()}


def _empty_source(session, dataset) -> "_Source":
    """Zero-length arrays of every column of the dataset, with the types an answer has."""
    from .session import empty_result

    m, q = session.build_query(dataset)
    empty = empty_result(m, q)
    source = _Source({n: _plain(ak.from_arrow(empty.column(n))) for n in empty.column_names})
    source.metadata = {"uuid": f"skyhook:{dataset}:schema", "num_rows": 0, "object_path": dataset}
    return source


def _connect(session):
    if session is None:
        from . import connect

        session = connect()
    return session


def columns_touched(processor, dataset: str, *, session=None, schemaclass=None, metadata=None) -> list[str]:
    """The branches of ``dataset`` that ``processor.process`` (or a plain function of the
    events) touches, found without reading data: the function runs on zero-length
    NanoEvents of the dataset's schema, traced by coffea's ``nanoevents.trace.trace``."""
    import warnings

    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
    from coffea.nanoevents.trace import trace

    session = _connect(session)
    fn = processor.process if hasattr(processor, "process") else processor
    if not callable(fn):
        raise TypeError(f"expected a coffea processor or a function of the events, got {type(processor).__name__}")
    md = dict(metadata or {}, dataset=dataset, filename=f"skyhook://{dataset}", entrystart=0, entrystop=0)
    with warnings.catch_warnings():
        # coffea warns when the typetracer cannot run the processor (a histogram fill, say)
        # and falls back to a zero-length array: that fallback is the expected path here
        warnings.simplefilter("ignore", RuntimeWarning)
        ev = NanoEventsFactory.from_preloaded(_empty_source(session, dataset), schemaclass=schemaclass or NanoAODSchema,
                                              metadata=md).events()
        touched = trace(fn, ev)
    return sorted(touched)


def events(dataset: str, columns=None, where=None, *, session=None, event_range=None, schemaclass=None,
           metadata=None, language="cut", pushdown="auto", mode="eager"):
    """coffea NanoEvents of the events of ``dataset`` (or ``event_range``) passing ``where``.

    mode="eager": an ``awkward.Array`` with the branches ``columns`` (default: all of the
    dataset) plus counters and event IDs, read by one pushdown query.
    mode="dask": a ``dask_awkward.Array``, one partition per kept Skyhook partition;
    ``columns`` (default: all) are the branches that may be read, and dask-awkward's
    optimisation asks each partition only for those the graph touches."""
    from coffea.nanoevents import NanoAODSchema

    session = _connect(session)
    if mode == "dask":
        from .coffea_dask import dask_events

        return dask_events(session, dataset, columns, where, event_range=event_range,
                           schemaclass=schemaclass or NanoAODSchema, metadata=metadata, language=language,
                           pushdown=pushdown)
    if mode != "eager":
        raise ValueError(f"mode must be 'eager' or 'dask', got {mode!r}")
    m, forms = _dataset_forms(session, dataset)
    stop = m.partitions[-1].event_stop if m.partitions else 0
    rng = tuple(event_range) if event_range else (0, stop)
    cols = _columns_for(forms, list(forms) if columns is None else columns)
    reader = _reader(session, dataset, cols, where, schemaclass or NanoAODSchema, metadata, language, pushdown)
    return _chunk(reader, rng)


def run(processor, dataset: str, columns=None, where=None, *, session=None, schemaclass=None, metadata=None,
        language="cut", pushdown="auto"):
    """Run a coffea processor over ``dataset``, one chunk per kept Skyhook partition; returns
    ``(output, report)``: the output merged by ``coffea.processor.accumulate`` and
    ``postprocess``, and per chunk its event range, events and the columns asked.

    columns: the branches to read; by default those ``columns_touched`` finds (the
    processor traced over the dataset's schema), reported as ``report["discovered"]``."""
    from coffea.nanoevents import NanoAODSchema
    from coffea.processor import accumulate

    session = _connect(session)
    schemaclass = schemaclass or NanoAODSchema
    m, forms = _dataset_forms(session, dataset)
    discovered = None
    if columns is None:
        discovered = columns_touched(processor, dataset, session=session, schemaclass=schemaclass,
                                     metadata=metadata)
        columns = discovered
    cols = _columns_for(forms, columns)
    _, query = session.build_query(m, columns=[], where=where, language=language) if language == "cut" \
        else session.build_query(m, where=where, language=language)
    outputs, chunks = [], []
    reader = _reader(session, dataset, cols, where, schemaclass, metadata, language, pushdown)
    for t in planner.plan(m, query, pushdown).tasks:
        ev = _chunk(reader, (t.event_start, t.event_stop))
        try:
            outputs.append(processor.process(ev))
        except RuntimeError as e:
            raise _unread_branch_error(e, reader) or e

        chunks.append({"event_range": (t.event_start, t.event_stop), "events": len(ev), "columns": cols})
    output = processor.postprocess(accumulate(outputs)) if outputs else None
    return output, {"chunks": chunks, "columns": cols, "discovered": discovered}
