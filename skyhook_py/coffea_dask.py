"""coffea's dask mode over Skyhook: NanoEvents as a ``dask_awkward.Array`` whose IO
function asks the OSDs only for the branches the graph touches.

``NanoEventsFactory.from_root(..., mode="dask")`` hands ``uproot.dask`` a *form mapping*
(coffea's NanoAOD schema applied to the file's flat form) and lets uproot's IO function
turn the buffers dask-awkward reports as touched into branch names.  This module does
the same with a Skyhook IO function in place of ``uproot.dask``:

- ``SkyhookFormMapping`` applies the schema to the dataset's flat form (the buffer keys
  carry coffea's ``branch,!load,...`` instructions, so a buffer key names its branches);
- ``SkyhookEventsReader`` is the dask-awkward IO function (``mock``, ``mock_empty``,
  ``prepare_for_projection``, ``project``, ``project_manually``, as uproot's reader):
  a partition is one Skyhook query of the projected branches over one kept partition's
  event range, with the cut pushed down; buffers of branches not asked are
  placeholders, as in uproot;
- ``dask_events`` builds it through ``NanoEventsFactory(..., mode="dask").events()`` so
  that coffea sets up its cross-references (``@original_array``) as for ``from_root``.

``reader.requested`` lists the branches each call asked for (tests and logs).
"""

from __future__ import annotations

from functools import partial

import awkward as ak

from .query import planner

_OFFSETS = None


def _offsets_label():
    global _OFFSETS
    if _OFFSETS is None:
        from coffea.nanoevents.util import quote

        _OFFSETS = quote(",!offsets")
    return _OFFSETS


def _key_formatter(prefix, form_key, form, attribute):
    """coffea's buffer key: ``<partition>/<attribute>/<form key>``."""
    if attribute == "offsets":
        form_key += _offsets_label()
    return prefix + f"/{attribute}/{form_key}"


class SkyhookFormMapping:
    """The schema applied to a flat form, and the buffer-key <-> branch bookkeeping
    (the protocol coffea's form mappings implement for ``uproot.dask``)."""

    def __init__(self, schemaclass, metadata=None):
        self.schemaclass = schemaclass
        self.metadata = metadata
        self.behavior = dict(schemaclass.behavior())

    def __call__(self, flat_form):
        from coffea.nanoevents.mapping import PreloadedSourceMapping

        empty = ak.Array(flat_form.length_zero_array(highlevel=False))
        lform = PreloadedSourceMapping._extract_base_form({k: empty[k] for k in ak.fields(empty)})
        lform["parameters"]["metadata"] = self.metadata
        return ak.forms.from_dict(self.schemaclass(lform, "latest").form), self

    @property
    def buffer_key(self):
        return partial(_key_formatter, "")

    def parse_buffer_key(self, buffer_key):
        _prefix, attribute, form_key = buffer_key.rsplit("/", maxsplit=2)
        if attribute == "offsets":
            return form_key[: -len(_offsets_label())], attribute
        return form_key, attribute

    def keys_for_buffer_keys(self, buffer_keys):
        from coffea.nanoevents.util import unquote

        branches = set()
        for buffer_key in buffer_keys:
            form_key, _ = self.parse_buffer_key(buffer_key)
            ops = unquote(form_key).split(",")
            branches.update(name for name, op in zip(ops, ops[1:]) if op.startswith("!load"))
        return frozenset(branches)


class SkyhookEventsReader:
    """dask-awkward IO function: one Skyhook query per (event_start, event_stop)."""

    def __init__(self, session, dataset, keys, where, language, pushdown, expected_form, mapping_info,
                 lock, requested):
        self.session, self.dataset = session, dataset
        self.keys = frozenset(keys)
        self.where, self.language, self.pushdown = where, language, pushdown
        self.expected_form, self.form_mapping_info = expected_form, mapping_info
        self._lock, self.requested = lock, requested

    # -- dask-awkward's protocol (as uproot's reader implements it) ----------------------
    @property
    def behavior(self):
        return self.form_mapping_info.behavior

    def mock(self):
        return ak.typetracer.typetracer_from_form(self.expected_form, highlevel=True, behavior=self.behavior)

    def mock_empty(self, backend="cpu"):
        return ak.to_backend(self.expected_form.length_zero_array(highlevel=False), backend=backend,
                             highlevel=True, behavior=self.behavior)

    def prepare_for_projection(self):
        from dask_awkward.lib.utils import trace_form_structure

        meta, report = ak.typetracer.typetracer_with_report(
            self.expected_form, highlevel=True, behavior=self.behavior,
            buffer_key=self.form_mapping_info.buffer_key)
        state = {"trace": trace_form_structure(self.expected_form, buffer_key=self.form_mapping_info.buffer_key)}
        return meta, report, state

    def necessary_columns(self, *, report, state):
        from dask_awkward.lib.utils import buffer_keys_required_to_compute_shapes

        trace = state["trace"]
        data_buffers = {*report.data_touched,
                        *buffer_keys_required_to_compute_shapes(
                            self.form_mapping_info.parse_buffer_key, report.shape_touched,
                            trace["form_key_to_parent_form_key"], trace["form_key_to_buffer_keys"])}
        return self.form_mapping_info.keys_for_buffer_keys(data_buffers) & self.keys

    def project(self, *, report, state):
        return self.project_manually(self.necessary_columns(report=report, state=state))

    def project_manually(self, columns):
        return SkyhookEventsReader(self.session, self.dataset, frozenset(columns) & self.keys, self.where,
                                   self.language, self.pushdown, self.expected_form, self.form_mapping_info,
                                   self._lock, self.requested)

    # -- one partition ---------------------------------------------------------------------
    def __call__(self, event_range):
        from awkward._nplikes.numpy import Numpy
        from coffea.nanoevents.mapping import PreloadedOpener, PreloadedSourceMapping
        from coffea.nanoevents.util import tuple_to_key

        from .coffea import EVENT_IDS, _plain

        keys = sorted(self.keys)
        # nothing touched but the length: the smallest column gives the row count
        ask = keys or [next((c for c in EVENT_IDS if c in self._all_columns()), self._all_columns()[0])]
        with self._lock:
            t = self.session.run(self.dataset, columns=ask, where=self.where, event_range=tuple(event_range),
                                 language=self.language, pushdown=self.pushdown).table
        self.requested.append(keys)
        n = t.num_rows
        source = {k: _plain(ak.from_arrow(t.column(k))) for k in keys}
        uuid = f"skyhook:{self.dataset}:{event_range[0]}-{event_range[1]}"
        mapping = PreloadedSourceMapping(PreloadedOpener({uuid: source}), 0, n, access_log=None)
        mapping.preload_column_source(uuid, self.dataset, source)
        full_key = partial(_key_formatter, tuple_to_key((uuid, self.dataset, f"0-{n}")))
        nplike = Numpy.instance()
        container = {}
        info = self.form_mapping_info
        for bkey, dtype in self.expected_form.expected_from_buffers(buffer_key=info.buffer_key).items():
            if info.keys_for_buffer_keys({bkey}) <= self.keys:
                form_key, attribute = info.parse_buffer_key(bkey)
                container[bkey] = mapping[full_key(form_key=form_key, attribute=attribute, form=None)]
            else:
                container[bkey] = ak.typetracer.PlaceholderArray(
                    nplike=nplike, shape=(ak.typetracer.unknown_length,), dtype=dtype)
        return ak.from_buffers(self.expected_form, n, container, behavior=self.behavior,
                               buffer_key=info.buffer_key)

    def _all_columns(self):
        return list(self.session.manifest(self.dataset).column_types())


def dask_events(session, dataset, columns, where, *, event_range, schemaclass, metadata, language, pushdown):
    import dask_awkward as dak
    from coffea.nanoevents import NanoEventsFactory

    from .coffea import _columns_for, _empty_source, _reader

    m = session.manifest(dataset)
    source = _empty_source(session, dataset)
    forms = {n: None for n in source}
    cols = _columns_for(forms, list(source) if columns is None else columns)
    _, query = session.build_query(m, columns=[], where=where, event_range=event_range, language=language) \
        if language == "cut" else session.build_query(m, where=where, event_range=event_range, language=language)
    ranges = [(t.event_start, t.event_stop) for t in planner.plan(m, query, pushdown).tasks] or [(0, 0)]
    reader = _reader(session, dataset, cols, where, schemaclass, metadata, language, pushdown, all_columns=False)

    def opener(form_mapping):
        return dak.from_map(reader, ranges, label=f"from-skyhook-{dataset}")

    return NanoEventsFactory(reader.form_mapping_info, opener, None, mode="dask").events()
