"""The HDF5 reader (h5py): the datasets of one group -> Arrow record batches of whole
events; jagged collections through count (and start) columns.  See readers.py for the
common face.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import InputFileError
from .readers import _BASIC_KINDS, Reader, _list_array, _numpy_values


class _Table:
    """Columns of one HDF5 dataset or group that share a row count."""

    def __init__(self, name: str, rows: int):
        self.name, self.rows = name, rows
        self.columns: dict[str, tuple] = {}   # column -> (h5py dataset, how, extra)


class HDF5Reader(Reader):
    """``tree`` is the HDF5 group to read (default: the root group).

    ``mapping`` (optional) says what names cannot:
    ``{"events": "events", "collections": {"particles": {"count": "nparticles",
    "start": "start"}}, "exclude": ["init"]}``: the table whose rows are events, each
    collection table with its count column (and start column) in the event table,
    and tables to leave out.
    """

    def __init__(self, path: str, tree: str | None, mapping: dict | None = None):
        import h5py

        self.path = path
        self.skipped = []
        mapping = dict(mapping or {})
        try:
            self._file = h5py.File(path, "r")
        except Exception as e:
            raise InputFileError(f"{path!r} is not a readable HDF5 file (truncated or corrupt?): "
                                 f"{type(e).__name__}: {e}") from e
        try:
            self._setup(tree or "/", mapping)
        except Exception:
            self.close()
            raise

    def _setup(self, group_name, mapping):
        import h5py

        if group_name not in self._file or not isinstance(self._file[group_name], h5py.Group):
            groups = ["/"]
            self._file.visititems(lambda n, o: groups.append(n) if isinstance(o, h5py.Group) else None)
            raise InputFileError(f"no group {group_name!r} in {self.path!r}; groups: {', '.join(groups)}")
        self.tree = group_name
        group = self._file[group_name]
        exclude = set(mapping.get("exclude", ()))
        tables: dict[str, _Table] = {}
        for key, obj in group.items():
            if key in exclude:
                continue
            if isinstance(obj, h5py.Dataset):
                t = self._table_of_dataset(key, obj)
                if t is not None:
                    tables[key] = t
            elif isinstance(obj, h5py.Group):
                t = self._table_of_group(key, obj)
                if t is not None:
                    tables[key] = t
        if not tables:
            raise InputFileError(f"no readable datasets in group {group_name!r} of {self.path!r}")
        self._plan(tables, mapping)

    def _table_of_dataset(self, key, ds) -> _Table | None:
        dt = ds.dtype
        if ds.ndim == 0:
            self.skipped.append((key, "a scalar dataset"))
            return None
        t = _Table(key, ds.shape[0])
        if dt.names:  # compound: one column per field
            if ds.ndim != 1:
                self.skipped.append((key, f"compound dataset of shape {ds.shape}"))
                return None
            for f in dt.names:
                sub = dt.fields[f][0]
                if sub.kind in _BASIC_KINDS and sub.shape == ():
                    t.columns[f] = (ds, "field", f)
                else:
                    self.skipped.append((f"{key}.{f}", f"dtype {sub}"))
            return t if t.columns else None
        if dt.kind not in _BASIC_KINDS:
            self.skipped.append((key, f"dtype {dt}"))
            return None
        if ds.ndim == 1:
            t.columns[key] = (ds, "plain", None)
        elif ds.ndim == 2:
            props = ds.attrs.get("properties")
            if props is not None and len(props) == ds.shape[1]:
                for i, p in enumerate(props):
                    p = p.decode() if isinstance(p, bytes) else str(p)
                    t.columns[p] = (ds, "column", i)
            else:
                t.columns[key] = (ds, "fixed", ds.shape[1])
        else:
            self.skipped.append((key, f"dataset of shape {ds.shape}"))
            return None
        return t

    def _table_of_group(self, key, group) -> _Table | None:
        import h5py

        rows = None
        t = None
        for sub, obj in group.items():
            if not isinstance(obj, h5py.Dataset):
                self.skipped.append((f"{key}/{sub}", "nested group"))
                continue
            st = self._table_of_dataset(sub, obj)
            if st is None:
                continue
            if rows is None:
                rows, t = st.rows, _Table(key, st.rows)
            if st.rows != rows:
                raise InputFileError(f"{self.path}: datasets of group {key!r} have unequal lengths "
                                     f"({next(iter(t.columns))}: {rows}, {sub}: {st.rows})")
            for c, spec in st.columns.items():
                t.columns[f"{key}_{c}"] = spec
        return t

    def _plan(self, tables: dict[str, _Table], mapping):
        """Choose the event table and the collections; everything else must match it."""
        collections = {}  # table name -> (count column, start column or None)
        for cname, spec in (mapping.get("collections") or {}).items():
            if cname not in tables:
                raise InputFileError(f"mapping names collection {cname!r}, which is not in "
                                     f"{self.path!r}; tables: {', '.join(sorted(tables))}")
            spec = {"count": spec} if isinstance(spec, str) else spec
            collections[cname] = (spec["count"], spec.get("start"))
        event_name = mapping.get("events")
        all_cols = {c: tn for tn, t in tables.items() for c in t.columns}
        if not collections:  # infer: a table X with a count column nX elsewhere
            for tn, t in tables.items():
                stems = {tn, tn.rstrip("s")} | ({tn[:-1]} if tn.endswith("s") else set())
                for stem in stems:
                    count = next((c for c in (f"n{stem}", f"N{stem}", f"n{stem}s", f"n_{stem}")
                                  if c in all_cols and all_cols[c] != tn), None)
                    if count:
                        owner = tables[all_cols[count]]
                        start = next((c for c in (f"{stem}_start", f"start_{stem}", "start", "offset")
                                      if c in owner.columns), None)
                        collections[tn] = (count, start)
                        break
        if event_name is None:
            owners = {all_cols.get(c) for c, _ in collections.values()}
            owners.discard(None)
            if len(owners) > 1:
                raise InputFileError(f"{self.path}: count columns lie in several tables "
                                     f"({', '.join(sorted(owners))}); give a mapping")
            event_name = owners.pop() if owners else None
        if event_name is not None and event_name not in tables:
            raise InputFileError(f"event table {event_name!r} is not in {self.path!r}; tables: "
                                 f"{', '.join(sorted(tables))}")
        flat = [t for n, t in tables.items() if n not in collections]
        if event_name is None:
            lengths = {t.name: t.rows for t in flat}
            if len(set(lengths.values())) > 1:
                listing = ", ".join(f"{n} ({r} rows)" for n, r in sorted(lengths.items()))
                raise InputFileError(f"{self.path}: HDF5 datasets of unequal length in group "
                                     f"{self.tree!r}: {listing}; give a mapping or exclude some")
            events = flat[0]
            others = flat
        else:
            events = tables[event_name]
            others = []
            for t in flat:
                if t.rows == events.rows:
                    others.append(t)
                else:  # with collections, tables of other lengths are per-file metadata
                    self.skipped.append((t.name, f"{t.rows} rows, not one per event ({events.rows})"))
        self.entries = events.rows
        self._flat = {}
        for t in others:
            for c, spec in t.columns.items():
                if c in self._flat:
                    c = f"{t.name}_{c}"
                self._flat[c] = spec
        self._collections = []
        for cname, (count, start) in collections.items():
            if count not in self._flat:
                raise InputFileError(f"{self.path}: count column {count!r} of collection {cname!r} "
                                     "is not an event column")
            counts = self._read_column(self._flat[count], 0, self.entries)
            if counts.size and (np.any(counts < 0) or np.any(counts != np.floor(counts))):
                raise InputFileError(f"{self.path}: count column {count!r} holds values that are "
                                     "not non-negative integers")
            counts = counts.astype(np.int64)
            rows = tables[cname].rows
            if start is not None:
                starts = self._read_column(self._flat[start], 0, self.entries).astype(np.int64)
                if counts.size and (starts.min() < 0 or (starts + counts).max() > rows):
                    raise InputFileError(f"{self.path}: {start!r} + {count!r} point past the "
                                         f"{rows} rows of {cname!r}")
            else:
                if counts.sum() != rows:
                    raise InputFileError(f"{self.path}: the counts {count!r} add up to "
                                         f"{int(counts.sum())}, but {cname!r} has {rows} rows")
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            cols = {}
            for c, spec in tables[cname].columns.items():
                name = c if c.startswith(f"{cname}_") else f"{cname}_{c}"
                cols[name] = spec
            self._collections.append((cname, starts, counts, cols))
        self.schema = self._read(0, 0).schema

    @staticmethod
    def _read_column(spec, start, stop, index=None):
        ds, how, extra = spec
        if index is not None:   # gather rows (sorted, possibly repeated)
            data = ds[np.unique(index)] if index.size else ds[0:0]
            pos = np.searchsorted(np.unique(index), index)
            data = data[pos]
        else:
            data = ds[start:stop]
        if how == "field":
            return np.ascontiguousarray(data[extra])
        if how == "column":
            return np.ascontiguousarray(data[:, extra])
        return np.ascontiguousarray(data)

    def _read(self, start, stop):
        arrays, names = [], []
        for c, spec in self._flat.items():
            data = self._read_column(spec, start, stop)
            if spec[1] == "fixed":
                arrays.append(pa.FixedSizeListArray.from_arrays(_numpy_values(data.reshape(-1)),
                                                                spec[2]))
            else:
                arrays.append(_numpy_values(data))
            names.append(c)
        for cname, starts, counts, cols in self._collections:
            s, n = starts[start:stop], counts[start:stop]
            offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
            if n.size and np.all(s[1:] == s[:-1] + n[:-1]):   # contiguous: one slice
                lo, hi, index = int(s[0]), int(s[0] + offsets[-1]), None
            else:
                lo, hi = 0, 0
                index = (np.repeat(s - offsets[:-1], n) + np.arange(offsets[-1])) if n.size \
                    else np.zeros(0, np.int64)
            for c, spec in cols.items():
                data = self._read_column(spec, lo, hi, index)
                if data.ndim != 1:
                    raise InputFileError(f"{self.path}: collection column {c!r} is not 1-D")
                arrays.append(_list_array(offsets, data))
                names.append(c)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def close(self):
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None
