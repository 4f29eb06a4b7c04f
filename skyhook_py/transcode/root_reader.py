"""The ROOT reader (uproot): TTrees and RNTuples -> Arrow record batches of whole events.

A NanoAOD collection (counter ``nX`` and jagged branches ``X_*``) gives ``list<T>``
columns plus the counter as its own column; see readers.py for the common face.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import InputFileError, closest_matches
from . import basket_check
from .readers import _BASIC_KINDS, Reader, _list_array, _numpy_values

# -- awkward layouts -> Arrow columns -------------------------------------------------


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
                why = basket_check.problem(b)
                if why is not None:   # uproot would fail on it mid-ingest
                    self.skipped.append((b.name, f"uproot cannot read it: {why}"))
                    continue
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
        try:
            arrays = self._arrays(start, stop)
        except Exception as e:
            bad = self._unreadable(start, stop)
            if bad is None:
                raise
            raise InputFileError(f"{self.path}: tree {self.tree!r}, branch {bad!r}: entries "
                                 f"{start}..{stop} cannot be read: {type(e).__name__}: {e}") from e
        batch, _ = _batch_from_awkward(arrays)
        if batch.schema != self.schema:
            raise InputFileError(f"{self.path}: entries {start}..{stop} of {self.tree!r} read as "
                                 f"{batch.schema}, not {self.schema}")
        return batch

    def _unreadable(self, start, stop) -> str | None:
        """The first branch that fails alone over [start, stop), to name it in the error."""
        if self._rntuple:
            return None
        for name in sorted(self._branches):
            try:
                self._tree[name].array(entry_start=start, entry_stop=stop, library="ak")
            except Exception:  # noqa: BLE001 - any failure of that branch names it
                return name
        return None

    def close(self):
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None
