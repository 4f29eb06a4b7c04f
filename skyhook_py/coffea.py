"""coffea over Skyhook: NanoEvents (coffea's NanoAOD schema) built from Skyhook answers,
and a processor runner that pushes the cut and the processor's columns down into the OSDs.

``events(dataset, columns=..., where=...)`` gives coffea NanoEvents of the events that
pass ``where`` (``events.Muon.pt``, ``events.Jet.matched_muons`` and the other
cross-references whose index branches are among the columns), built with coffea's own
``NanoEventsFactory.from_preloaded`` from one pushdown query.  Counters (``nMuon``) and
the event IDs NanoAODSchema requires are added to the columns asked.

``run(processor, dataset, columns=..., where=...)`` runs a
``coffea.processor.ProcessorABC`` over every Skyhook partition kept by the planner, in
coffea's idiom (``process(events)`` per chunk, outputs merged with
``coffea.processor.accumulate``, then ``postprocess``); each chunk is one pushdown query
of exactly those columns.

What this deliberately ignores: discovering the columns a processor touches by itself
(coffea's virtual mode loads every branch of a preloaded source at construction, so it
cannot tell; name them as with ``uproot.dask(filter_name=...)``), coffea's dask mode
(use ``skyhook_py.dask.from_skyhook(records=True)`` for dask graphs), and executors that
ship work to other processes (the Session is in-process).
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


def _chunk(session, dataset, columns, where, event_range, schemaclass, metadata, language, pushdown):
    from coffea.nanoevents import NanoEventsFactory

    t = session.run(dataset, columns=columns, where=where, event_range=event_range, language=language,
                    pushdown=pushdown).table
    source = _Source({n: _plain(ak.from_arrow(t.column(n))) for n in columns})
    source.metadata = {"uuid": f"skyhook:{dataset}:{event_range[0]}-{event_range[1]}",
                       "num_rows": t.num_rows, "object_path": dataset}
    md = dict(metadata or {}, dataset=dataset, filename=f"skyhook://{dataset}",
              entrystart=event_range[0], entrystop=event_range[1])
    return NanoEventsFactory.from_preloaded(source, schemaclass=schemaclass, metadata=md).events()


def _dataset_forms(session, dataset):
    m = session.manifest(dataset)
    return m, {name: None for name in m.column_types()}


def events(dataset: str, columns, where=None, *, session=None, event_range=None, schemaclass=None,
           metadata=None, language="cut", pushdown="auto"):
    """coffea NanoEvents of the events of ``dataset`` (or ``event_range``) passing ``where``,
    with the branches ``columns`` (plus counters and event IDs)."""
    from coffea.nanoevents import NanoAODSchema

    if session is None:
        from . import connect

        session = connect()
    m, forms = _dataset_forms(session, dataset)
    stop = m.partitions[-1].event_stop if m.partitions else 0
    rng = tuple(event_range) if event_range else (0, stop)
    return _chunk(session, dataset, _columns_for(forms, columns), where, rng, schemaclass or NanoAODSchema,
                  metadata, language, pushdown)


def run(processor, dataset: str, columns, where=None, *, session=None, schemaclass=None, metadata=None,
        language="cut", pushdown="auto"):
    """Run a coffea processor over ``dataset``, one chunk per kept Skyhook partition; returns
    ``(output, report)``: the output merged by ``coffea.processor.accumulate`` and
    ``postprocess``, and per chunk its event range, events and the columns asked."""
    from coffea.nanoevents import NanoAODSchema
    from coffea.processor import accumulate

    if session is None:
        from . import connect

        session = connect()
    schemaclass = schemaclass or NanoAODSchema
    m, forms = _dataset_forms(session, dataset)
    cols = _columns_for(forms, columns)
    _, query = session.build_query(m, columns=[], where=where, language=language) if language == "cut" \
        else session.build_query(m, where=where, language=language)
    outputs, chunks = [], []
    for t in planner.plan(m, query, pushdown).tasks:
        ev = _chunk(session, dataset, cols, where, (t.event_start, t.event_stop), schemaclass, metadata,
                    language, pushdown)
        outputs.append(processor.process(ev))
        chunks.append({"event_range": (t.event_start, t.event_stop), "events": len(ev), "columns": cols})
    output = processor.postprocess(accumulate(outputs)) if outputs else None
    return output, {"chunks": chunks, "columns": cols}
