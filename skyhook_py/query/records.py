"""NanoAOD records with awkward alone: flat branch names zipped into collections.

NanoAOD stores a collection as one counter and one jagged branch per field
(``nMuon``, ``Muon_pt``, ``Muon_eta``); coffea's NanoEvents shows them as
``events.Muon.pt``.  ``zip_records`` does the same naming with ``ak.zip`` only:

- ``X_f`` branches that are lists become fields ``f`` of the jagged collection
  ``X`` (their counts must agree with each other and with ``nX`` when it is there;
  the counter itself is then dropped, as NanoEvents drops it);
- ``X_f`` branches that are per-event scalars become a record ``X`` (``MET.pt``,
  ``PV.npvs``, ``HLT.IsoMu24``), as NanoEvents names singletons;
- names without an underscore (``run``, ``event``) and a counter without fields stay
  as they are.

What this deliberately ignores: cross-references (``Muon_jetIdx`` stays an index)
and behaviours (no ``.delta_r``); coffea's NanoEvents does those
(``skyhook_py.coffea``).
"""

from __future__ import annotations

import awkward as ak

from ..errors import QueryError


def _is_list(array) -> bool:
    return array.ndim > 1


def zip_records(events) -> ak.Array:
    """Zip a flat NanoAOD-style record array (or a pyarrow Table) into collections."""
    if not isinstance(events, ak.Array):
        events = ak.from_arrow(events)
    fields = ak.fields(events)
    groups: dict[str, list[str]] = {}
    for name in fields:
        prefix, sep, rest = name.partition("_")
        if sep and prefix and rest:
            groups.setdefault(prefix, []).append(name)
    out: dict = {}
    consumed: set[str] = set()
    for prefix, names in groups.items():
        jagged = [n for n in names if _is_list(events[n])]
        flat = [n for n in names if n not in jagged]
        counter = f"n{prefix}"
        if jagged:
            counts = ak.num(events[jagged[0]], axis=1)
            for n in jagged[1:]:
                if not ak.all(ak.num(events[n], axis=1) == counts):
                    raise QueryError(f"cannot zip collection {prefix!r}: {n!r} and {jagged[0]!r} have "
                                     f"different numbers of entries per event")
            if counter in fields and not ak.all(ak.fill_none(events[counter], 0) == counts):
                raise QueryError(f"cannot zip collection {prefix!r}: {counter!r} disagrees with the "
                                 f"length of {jagged[0]!r}")
            out[prefix] = ak.zip({n[len(prefix) + 1:]: events[n] for n in jagged}, depth_limit=2)
            consumed.update(jagged)
            if counter in fields:
                consumed.add(counter)
            if flat:  # a per-event field beside a collection of the same name: keep it flat
                continue
        elif flat and prefix not in fields:
            out[prefix] = ak.zip({n[len(prefix) + 1:]: events[n] for n in flat}, depth_limit=1)
            consumed.update(flat)
    owner = {n: p for p in out for n in groups[p] if n in consumed}
    owner.update({f"n{p}": p for p in out if f"n{p}" in consumed})
    result: dict = {}
    for name in fields:  # dataset order; a collection takes the place of its first field
        if name in owner:
            result.setdefault(owner[name], out[owner[name]])
        else:
            result[name] = events[name]
    return ak.zip(result, depth_limit=1)
