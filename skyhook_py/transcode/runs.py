"""Metadata a NanoAOD file carries beside its events: the ``Runs`` and
``LuminosityBlocks`` trees.

- ``runs``: the run numbers, as sorted ``[first, last]`` ranges of consecutive numbers
  (from ``LuminosityBlocks.run``, else ``Runs.run``);
- ``lumi_blocks``: the number of distinct (run, luminosityBlock) pairs;
- ``sum_weights``: the generator sum of weights (``Runs.genEventSumw``, or
  ``genEventSumw_`` in older NanoAOD), simulation only;
- ``gen_events``: the generated events (``Runs.genEventCount``).

A file without these trees (or an HDF5 file) gives nothing.  Values of several files
are combined by ``combine`` (ranges merged, counts and sums added).
"""

from __future__ import annotations

import warnings

import numpy as np

from .readers import IngestWarning


def ranges(numbers) -> list[list[int]]:
    """Sorted distinct integers as ``[first, last]`` ranges of consecutive numbers."""
    vals = np.unique(np.asarray(list(numbers), dtype=np.int64))
    out: list[list[int]] = []
    for v in vals.tolist():
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _branch(tree, *names):
    for n in names:
        if n in tree:
            return tree[n].array(library="np")
    return None


def file_metadata(path: str) -> dict:
    """What the ``Runs``/``LuminosityBlocks`` trees of ROOT file ``path`` tell (may be {})."""
    if not str(path).endswith(".root"):
        return {}
    import uproot

    out: dict = {}
    try:
        with uproot.open(path) as f:
            keys = {k.split(";")[0] for k in f.keys(recursive=False)}
            run_numbers = None
            if "LuminosityBlocks" in keys:
                lb = f["LuminosityBlocks"]
                run = _branch(lb, "run")
                lumi = _branch(lb, "luminosityBlock")
                if run is not None:
                    run_numbers = run
                    if lumi is not None:
                        pairs = np.unique(np.stack([run.astype(np.int64), lumi.astype(np.int64)]), axis=1)
                        out["lumi_blocks"] = int(pairs.shape[1])
            if "Runs" in keys:
                r = f["Runs"]
                run = _branch(r, "run")
                if run_numbers is None and run is not None:
                    run_numbers = run
                sumw = _branch(r, "genEventSumw", "genEventSumw_")
                if sumw is not None and sumw.dtype.kind in "fiu" and sumw.ndim == 1:
                    out["sum_weights"] = float(np.sum(sumw, dtype=np.float64))
                count = _branch(r, "genEventCount", "genEventCount_")
                if count is not None and count.dtype.kind in "iu" and count.ndim == 1:
                    out["gen_events"] = int(np.sum(count, dtype=np.int64))
            if run_numbers is not None and len(run_numbers):
                out["runs"] = ranges(run_numbers.tolist())
    except Exception as e:  # noqa: BLE001 - metadata is a bonus: never fail an ingest for it
        warnings.warn(f"{path}: could not read its Runs/LuminosityBlocks trees ({e}); "
                      "no run metadata from it", IngestWarning, stacklevel=2)
        return {}
    return out


def combine(a: dict, b: dict) -> dict:
    """The file metadata of two sets of files together."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif k == "runs":
            nums = set()
            for first, last in out[k] + v:
                if last - first > 1_000_000:   # absurd; keep as is rather than expand
                    return out
                nums.update(range(first, last + 1))
            out[k] = ranges(nums)
        else:
            out[k] = out[k] + v
    return out


def from_files(paths) -> dict:
    out: dict = {}
    for p in paths:
        out = combine(out, file_metadata(p))
    return out
