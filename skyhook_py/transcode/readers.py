"""Readers: source files -> Arrow record batches of whole events.

One reader per file kind, all with the same face: ``schema`` (pa.Schema), ``entries``,
``tree`` (the name of what was read), ``skipped`` (columns left out, with the reason)
and ``batches(entry_start, entry_stop, step)``, which reads ``step`` events at a time
so memory stays bounded by the step, not the file.

- ROOT (uproot): TTrees and RNTuples.  A NanoAOD collection (counter ``nX`` and
  jagged branches ``X_*``) gives ``list<T>`` columns plus the counter as its own
  column; fixed-size arrays give ``fixed_size_list<T>[n]``; every basic type maps to
  the Arrow type of the NumPy dtype uproot reads (Double32 -> float64, Float16 ->
  float32).  Branches that are not numbers or lists of numbers (strings, objects,
  nested vectors) are skipped with a warning, or refused with ``strict``.
- HDF5 (h5py): the datasets of one group.  A 1-D dataset is a column, a compound
  dataset gives one column per field, a 2-D dataset with a ``properties`` attribute
  (the LHEH5 convention) one column per property, another 2-D dataset a fixed-size
  list column.  Jagged collections are found by a count column ``n<name>`` (and an
  optional ``start`` column) in the event table pointing into the rows of ``<name>``;
  a mapping says so when names do not tell.

Readers know nothing about partitions, encodings or Ceph.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pyarrow as pa

from ..errors import InputFileError, closest_matches

ROOT_MAGIC = b"root"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class IngestWarning(UserWarning):
    """Something of a source file was left out of the dataset."""


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def open_reader(path: str, tree: str | None = None, strict: bool = False,
                hdf5_mapping: dict | None = None):
    """Open ``path`` as a ROOT or HDF5 source (by its magic bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise InputFileError(f"no such file: {path!r}") from None
    except OSError as e:
        raise InputFileError(f"cannot read {path!r}: {e}") from e
    if head.startswith(ROOT_MAGIC):
        reader = RootReader(path, tree)
    elif head == HDF5_MAGIC:
        reader = HDF5Reader(path, tree, hdf5_mapping)
    else:
        raise InputFileError(f"{path!r} is neither a ROOT file nor an HDF5 file "
                             f"(it starts with {head!r})")
    if reader.skipped:
        listing = ", ".join(f"{n} ({why})" for n, why in reader.skipped)
        msg = f"{path}: {len(reader.skipped)} column(s) cannot be stored and are skipped: {listing}"
        if strict:
            reader.close()
            raise InputFileError(msg + " (strict mode)")
        warnings.warn(msg, IngestWarning, stacklevel=2)
    return reader


class Reader:
    path: str
    tree: str
    entries: int
    schema: pa.Schema
    skipped: list

    def batches(self, entry_start: int, entry_stop: int, step: int):
        for start in range(entry_start, entry_stop, max(1, step)):
            stop = min(entry_stop, start + max(1, step))
            try:
                batch = self._read(start, stop)
            except InputFileError:
                raise
            except Exception as e:  # a truncated or corrupt file fails in the decoder
                raise InputFileError(
                    f"{self.path}: cannot read entries {start}..{stop} of {self.tree!r}: "
                    f"{type(e).__name__}: {e}") from e
            if batch.num_rows != stop - start:
                raise InputFileError(f"{self.path}: entries {start}..{stop} of {self.tree!r} gave "
                                     f"{batch.num_rows} rows")
            yield batch

    def bytes_per_event(self, sample: int = 1000) -> float:
        """Uncompressed Arrow bytes of one event, measured on the first events."""
        n = min(sample, self.entries)
        if n == 0:
            return 1.0
        return max(1.0, next(self.batches(0, n, n)).nbytes / n)

    def _read(self, start: int, stop: int) -> pa.RecordBatch:
        raise NotImplementedError

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- awkward layouts -> Arrow columns -------------------------------------------------
def _numpy_values(data: np.ndarray) -> pa.Array:
    data = np.asarray(data)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    return pa.array(data)


_BASIC_KINDS = "biuf"


def _columns_from_layout(name: str, layout, out: list, skipped: list):
    """Append (column name, pa.Array) pairs for one top-level field to ``out``."""
    import awkward as ak

    cls = type(layout).__name__
    if cls == "NumpyArray":
        if layout.data.dtype.kind not in _BASIC_KINDS:
            skipped.append((name, f"dtype {layout.data.dtype}"))
        elif layout.data.ndim == 1:
            out.append((name, _numpy_values(layout.data)))
        elif layout.data.ndim == 2:
            values = _numpy_values(np.ascontiguousarray(layout.data).reshape(-1))
            out.append((name, pa.FixedSizeListArray.from_arrays(values, layout.data.shape[1])))
        else:
            skipped.append((name, f"array of shape {layout.data.shape[1:]}"))
        return
    if cls == "RegularArray" and type(layout.content).__name__ == "NumpyArray" \
            and layout.content.data.ndim == 1 and layout.content.data.dtype.kind in _BASIC_KINDS:
        values = _numpy_values(layout.content.data[: len(layout) * layout.size])
        out.append((name, pa.FixedSizeListArray.from_arrays(values, layout.size)))
        return
    if cls in ("ListOffsetArray", "ListArray"):
        layout = layout.to_ListOffsetArray64(True) if cls == "ListArray" else layout
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        content = layout.content
        ccls = type(content).__name__
        if ccls == "NumpyArray" and content.data.ndim == 1 and content.data.dtype.kind in _BASIC_KINDS:
            out.append((name, _list_array(offsets, content.data)))
            return
        if ccls == "RecordArray":
            # an RNTuple collection of records: NanoAOD's X_field columns plus the counter nX
            fields = []
            for f in content.fields:
                sub = content.content(f)
                if type(sub).__name__ == "NumpyArray" and sub.data.ndim == 1 \
                        and sub.data.dtype.kind in _BASIC_KINDS:
                    fields.append((f"{name}_{f}", _list_array(offsets, sub.data)))
                else:
                    skipped.append((f"{name}.{f}", str(ak.types.from_layout(sub))))
            if fields:
                out.append((f"n{name}", pa.array(np.diff(offsets).astype(np.uint32))))
                out.extend(fields)
            return
    if cls == "RecordArray":
        for f in layout.fields:
            _columns_from_layout(f"{name}_{f}", layout.content(f), out, skipped)
        return
    skipped.append((name, str(ak.types.from_layout(layout))))


def _list_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    lo, hi = int(offsets[0]), int(offsets[-1])
    values = _numpy_values(data[lo:hi])
    rel = offsets - lo
    if hi - lo < 2**31:
        return pa.ListArray.from_arrays(pa.array(rel.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(rel), values)


def _batch_from_awkward(array, names: list[str] | None = None):
    """A record array of awkward -> (RecordBatch, skipped columns)."""
    import awkward as ak

    layout = ak.to_layout(array)   # no to_packed: each column takes only its own range
    out, skipped = [], []
    for field in layout.fields:
        _columns_from_layout(field, layout.content(field), out, skipped)
    seen = set()
    cols = []
    for n, a in out:
        if n in seen:  # an RNTuple may hold nX (or X_f) and the collection X both
            skipped.append((n, "a second column of that name (from a collection)"))
            continue
        seen.add(n)
        cols.append((n, a))
    return pa.RecordBatch.from_arrays([a for _, a in cols], names=[n for n, _ in cols]), skipped


# -- ROOT -----------------------------------------------------------------------------
class RootReader(Reader):
    def __init__(self, path: str, tree: str | None):
        import uproot

        self.path = path
        try:
            self._file = uproot.open(path)
            classes = self._file.classnames()
        except Exception as e:
            raise InputFileError(f"{path!r} is not a readable ROOT file (truncated or corrupt?): "
                                 f"{type(e).__name__}: {e}") from e
        trees = {}
        for key, cls in classes.items():
            if cls in ("TTree", "ROOT::RNTuple") or cls.startswith("TNtuple"):
                trees.setdefault(key.rsplit(";", 1)[0], key)
        if tree is None:
            if "Events" in trees:
                tree = "Events"
            elif len(trees) == 1:
                tree = next(iter(trees))
            elif not trees:
                self.close()
                raise InputFileError(f"{path!r} holds no TTree or RNTuple "
                                     f"(it holds {', '.join(sorted(classes)) or 'nothing'})")
            else:
                self.close()
                raise InputFileError(f"{path!r} holds several trees ({', '.join(sorted(trees))}): "
                                     "say which one with --tree")
        name = tree.rsplit(";", 1)[0]
        if name not in trees:
            self.close()
            close = closest_matches(name, trees)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise InputFileError(f"no tree {tree!r} in {path!r}; trees in the file: "
                                 f"{', '.join(sorted(trees)) or 'none'}{hint}")
        self.tree = name
        try:
            self._tree = self._file[trees[name]]
            self.entries = int(self._tree.num_entries)
            self._rntuple = classes[trees[name]] == "ROOT::RNTuple"
            self.skipped = []
            self._branches = None if self._rntuple else self._pick_branches()
            empty, skipped = _batch_from_awkward(self._arrays(0, 0))
        except InputFileError:
            raise
        except Exception as e:
            self.close()
            raise InputFileError(f"cannot read the tree {name!r} of {path!r} (truncated or "
                                 f"corrupt?): {type(e).__name__}: {e}") from e
        self.skipped.extend(skipped)
        self.schema = empty.schema

    def _pick_branches(self):
        import uproot.interpretation as ui
        from uproot.interpretation.jagged import AsJagged
        from uproot.interpretation.numerical import Numerical

        wanted = set()
        self._fixed_bytes = 0
        for b in self._tree.itervalues(recursive=True):
            if b.branches:   # a split object's parent: its leaves are read instead
                continue
            try:
                interp = b.interpretation
            except Exception as e:  # noqa: BLE001 - uproot raises many kinds here
                self.skipped.append((b.name, f"uproot cannot interpret it: {e}"))
                continue
            content = interp.content if isinstance(interp, AsJagged) else interp
            dt = content.to_dtype if isinstance(content, Numerical) else None
            if dt is not None and dt.base.kind in _BASIC_KINDS \
                    and len(dt.shape) <= (0 if isinstance(interp, AsJagged) else 1):
                wanted.add(b.name)
                self._fixed_bytes += 4 if isinstance(interp, AsJagged) else dt.itemsize
            elif isinstance(interp, ui.identify.UnknownInterpretation):
                self.skipped.append((b.name, f"uproot cannot interpret {b.typename!r}"))
            else:
                self.skipped.append((b.name, f"{b.typename} is not a number or list of numbers"))
        return wanted

    def bytes_per_event(self, sample: int = 1000) -> float:
        if self._rntuple or not self.entries:
            return super().bytes_per_event(sample)
        # from the TTree's metadata: a sample read would decompress whole baskets
        # (fTotBytes misses baskets still held in the TBranch of small files: the sum of
        # the fixed sizes is a floor; the writer re-measures on every batch anyway)
        total = sum(b.member("fTotBytes") for b in self._tree.itervalues(recursive=True)
                    if b.name in self._branches)
        return max(1.0, total / self.entries, self._fixed_bytes)

    def _arrays(self, start, stop):
        if self._rntuple:
            return self._tree.arrays(entry_start=start, entry_stop=stop)
        wanted = self._branches
        return self._tree.arrays(filter_branch=lambda b: b.name in wanted,
                                 entry_start=start, entry_stop=stop, library="ak")

    def _read(self, start, stop):
        batch, _ = _batch_from_awkward(self._arrays(start, stop))
        if batch.schema != self.schema:
            raise InputFileError(f"{self.path}: entries {start}..{stop} of {self.tree!r} read as "
                                 f"{batch.schema}, not {self.schema}")
        return batch

    def close(self):
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None


# -- HDF5 -----------------------------------------------------------------------------
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
