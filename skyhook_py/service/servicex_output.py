"""Result files of the ServiceX front end: one answer (a pyarrow Table) as the bytes of a
Parquet file or of a ROOT file with one TTree, as ServiceX's transformers write them.

ROOT files are written with uproot (``uproot.recreate``): a TTree named ``servicex`` (the
name ServiceX's uproot transformer gives it) with one branch per column; a jagged column
becomes a jagged branch with its counter ``n<column>`` (uproot's default).  Columns that
a TTree cannot hold through uproot (lists of lists, strings, records) are refused with a
message naming them; option types without nulls (Arrow's nullable fields) are written as
plain numbers.

What this deliberately ignores: RNTuple output (``root-rntuple``: refused) and
compression settings (uproot's and pyarrow's defaults).
"""

from __future__ import annotations

import io
import os
import tempfile

TREE = "servicex"
EXTENSIONS = {"parquet": "parquet", "root-file": "root"}


def check_format(result_format: str) -> str:
    if result_format not in EXTENSIONS:
        raise ValueError(f"result-format {result_format!r} is not supported: Skyhook writes "
                         f"{' or '.join(sorted(EXTENSIONS))} (General.OutputFormat parquet or root-ttree)")
    return result_format


def to_bytes(table, result_format: str) -> bytes:
    if result_format == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()
    if result_format == "root-file":
        return _root_bytes(table)
    raise ValueError(f"unknown result format {result_format!r}")


def _root_bytes(table) -> bytes:
    import awkward as ak
    import uproot

    from ..coffea import _strip_options

    branches = {}
    for name in table.column_names:
        array = _strip_options(ak.from_arrow(table.column(name)))
        depth = array.ndim
        bad = depth > 2 or not _numeric(array)
        if bad:
            raise ValueError(f"column {name!r} ({array.type}) cannot be written to a ROOT TTree by uproot: "
                             f"ask for numbers or lists of numbers, or use General.OutputFormat: parquet")
        branches[name] = array
    counters = {f"n{n}" for n, a in branches.items() if a.ndim == 2}
    clash = sorted(counters & set(branches))
    if clash:
        raise ValueError(f"column {clash[0]!r} has the name of the counter uproot writes for the jagged column "
                         f"{clash[0][1:]!r}: rename one of them (or use General.OutputFormat: parquet)")
    if not branches:
        raise ValueError("the answer has no columns: nothing to write to a ROOT file")
    fd, path = tempfile.mkstemp(suffix=".root", prefix="skyhook-servicex-")
    os.close(fd)
    try:
        with uproot.recreate(path) as f:
            # mktree + extend: a TTree (assigning a dict would write an RNTuple in uproot >= 5.7)
            tree = f.mktree(TREE, {n: a.type.content for n, a in branches.items()})
            if table.num_rows:
                tree.extend(branches)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def _numeric(array) -> bool:
    import awkward as ak

    layout = array.layout
    while layout.is_list:
        layout = layout.content
    return isinstance(layout, ak.contents.NumpyArray)
