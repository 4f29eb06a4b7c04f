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
  nested vectors) and branches uproot cannot read (basket_check.py: a basket whose
  entry count disagrees with the branch) are skipped with a warning naming file, tree
  and branch, or refused with ``strict``.
- HDF5 (h5py): the datasets of one group.  A 1-D dataset is a column, a compound
  dataset gives one column per field, a 2-D dataset with a ``properties`` attribute
  (the LHEH5 convention) one column per property, another 2-D dataset a fixed-size
  list column.  Jagged collections are found by a count column ``n<name>`` (and an
  optional ``start`` column) in the event table pointing into the rows of ``<name>``;
  a mapping says so when names do not tell.

This module is the face (``open_reader``, the ``Reader`` base, the NumPy -> Arrow
helpers both readers share); the readers live in ``root_reader.py`` and
``hdf5_reader.py``.  Readers know nothing about partitions, encodings or Ceph.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pyarrow as pa

from ..errors import InputFileError

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
        from .root_reader import RootReader

        reader = RootReader(path, tree)
    elif head == HDF5_MAGIC:
        from .hdf5_reader import HDF5Reader

        reader = HDF5Reader(path, tree, hdf5_mapping)
    else:
        raise InputFileError(f"{path!r} is neither a ROOT file nor an HDF5 file "
                             f"(it starts with {head!r})")
    if reader.skipped:
        listing = ", ".join(f"{n} ({why})" for n, why in reader.skipped)
        msg = (f"{path}, tree {reader.tree!r}: {len(reader.skipped)} column(s) cannot be stored "
               f"and are skipped: {listing}")
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


# -- NumPy -> Arrow, shared by both readers ------------------------------------------
_BASIC_KINDS = "biuf"   # NumPy kinds a column may have


def _numpy_values(data: np.ndarray) -> pa.Array:
    data = np.asarray(data)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    return pa.array(data)


def _list_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    lo, hi = int(offsets[0]), int(offsets[-1])
    values = _numpy_values(data[lo:hi])
    rel = offsets - lo
    if hi - lo < 2**31:
        return pa.ListArray.from_arrays(pa.array(rel.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(rel), values)
