"""Demo data: NanoAOD-like ROOT files of any size, written by uproot.

A TTree ``Events`` with ``run``, ``luminosityBlock``, ``event``, ``MET_pt``, ``MET_phi``
and the collections Muon, Electron, Jet (optionally Photon), each as NanoAOD writes
them: a counter ``nX`` and jagged branches ``X_pt[nX]``, ``X_eta[nX]`` ...  Objects are
ordered by falling pt within an event, as in NanoAOD.  Distributions are rough
copies of the 2015 CMS open-data ttbar NanoAOD in ../shared/data (multiplicities
Poisson with about its means, a little richer in leptons so that dilepton cuts
select something; pt exponential above the NanoAOD thresholds with about its
means; MET gamma-distributed with its mean).  An optional wide tail of extra
scalar branches (``Extra_000`` ...) imitates NanoAOD's hundreds of flags.

Seedable and written in chunks (``chunk_events``) so that memory stays bounded
whatever the number of events.  Physics realism beyond that is not a goal.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

# (Poisson mean, pt threshold, pt exponential scale, |eta| max) per collection
COLLECTIONS = {
    "Muon": (0.6, 3.0, 30.0, 2.4),
    "Electron": (0.5, 5.0, 22.0, 2.5),
    "Jet": (3.0, 15.0, 16.0, 4.7),
    "Photon": (0.4, 10.0, 19.0, 2.5),
}
MUON_MASS = 0.10566
ELECTRON_MASS = 0.000511


def _collection(rng, name: str, n_events: int):
    import awkward as ak

    mean, threshold, scale, eta_max = COLLECTIONS[name]
    counts = rng.poisson(mean, n_events)
    total = int(counts.sum())
    pt = (threshold + rng.exponential(scale, total)).astype(np.float32)
    # NanoAOD orders objects by falling pt within an event
    pt = ak.sort(ak.unflatten(pt, counts), axis=1, ascending=False)
    fields = {
        "pt": pt,
        "eta": np.clip(rng.normal(0.0, eta_max / 2, total), -eta_max, eta_max).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, total).astype(np.float32),
    }
    flat_pt = ak.to_numpy(ak.flatten(pt))
    if name == "Muon":
        fields["mass"] = np.full(total, MUON_MASS, np.float32)
        fields["charge"] = rng.choice(np.array([-1, 1], np.int32), total)
        fields["tightId"] = rng.random(total) < 0.8
        fields["pfRelIso04_all"] = rng.exponential(0.06, total).astype(np.float32)
    elif name == "Electron":
        fields["mass"] = np.full(total, ELECTRON_MASS, np.float32)
        fields["charge"] = rng.choice(np.array([-1, 1], np.int32), total)
        fields["cutBased"] = rng.choice(np.arange(5, dtype=np.int32), total, p=[.1, .1, .2, .3, .3])
        fields["pfRelIso03_all"] = rng.exponential(0.07, total).astype(np.float32)
    elif name == "Jet":
        fields["mass"] = (flat_pt * rng.uniform(0.05, 0.25, total)).astype(np.float32)
        fields["btagDeepB"] = rng.beta(0.5, 3.0, total).astype(np.float32)
        fields["jetId"] = rng.choice(np.array([0, 2, 6], np.int32), total, p=[.05, .1, .85])
    elif name == "Photon":
        fields["mass"] = np.zeros(total, np.float32)
        fields["cutBased"] = rng.choice(np.arange(4, dtype=np.int32), total)
    return ak.zip({k: (v if k == "pt" else ak.unflatten(v, counts)) for k, v in fields.items()})


def _chunk(rng, start: int, n: int, photons: bool, extra_branches: int) -> dict:
    out = {
        "run": np.full(n, 1, np.uint32),
        "luminosityBlock": (1 + (start + np.arange(n)) // 1000).astype(np.uint32),
        "event": (1 + start + np.arange(n)).astype(np.uint64),
        "MET_pt": rng.gamma(2.0, 18.7, n).astype(np.float32),
        "MET_phi": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
    }
    for name in ("Muon", "Electron", "Jet") + (("Photon",) if photons else ()):
        out[name] = _collection(rng, name, n)
    for i in range(extra_branches):
        out[f"Extra_{i:03d}"] = rng.normal(0.0, 1.0, n).astype(np.float32)
    return out


def write_nanoaod(path: str, events: int = 10_000, seed: int = 0, photons: bool = False,
                  extra_branches: int = 0, chunk_events: int = 50_000, compression="zlib") -> str:
    """Write ``events`` NanoAOD-like events to the ROOT file ``path``; returns ``path``.

    compression: "zlib" (ROOT's default), "lz4", "zstd" or None.
    """
    import uproot

    comp = {"zlib": uproot.ZLIB(1), "lz4": uproot.LZ4(1), "zstd": uproot.ZSTD(1), None: None}[compression]
    rng = np.random.default_rng(seed)
    with uproot.recreate(path, compression=comp) as f:
        tree = None
        for start in range(0, max(events, 1), chunk_events):
            n = min(chunk_events, events - start)
            chunk = _chunk(rng, start, n, photons, extra_branches)
            if tree is None:
                types = {k: (v.type.content if hasattr(v, "fields") else v.dtype) for k, v in chunk.items()}
                tree = f.mktree("Events", types, title="NanoAOD-like demo events")
            if n:
                tree.extend(chunk)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m skyhook_py.demo_data",
                                description="write a NanoAOD-like demo ROOT file")
    p.add_argument("path")
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photons", action="store_true")
    p.add_argument("--extra-branches", type=int, default=0)
    p.add_argument("--compression", choices=("zlib", "lz4", "zstd", "none"), default="zlib")
    a = p.parse_args(argv)
    write_nanoaod(a.path, a.events, a.seed, a.photons, a.extra_branches,
                  compression=None if a.compression == "none" else a.compression)
    print(f"wrote {a.events:,} events to {a.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
