"""Dataset metadata: what an analyst knows about a dataset that its events do not say.

Metadata is a flat JSON object stored in the manifest header (so every version keeps
its own) and mirrored into the listing index (``skyhook list --where`` reads one
object).  Users set it at ingest (``--meta key=value``, ``--meta-file FILE`` in YAML or
JSON) or later (``skyhook meta DATASET --set k=v --unset k``: a new version).

Well-known keys have a type that is checked (values of other keys are free: string,
number, boolean, or a list of them):

=================  ======  ===========================================================
key                type    meaning
=================  ======  ===========================================================
is_mc              bool    simulation (true) or collision data (false)
year               int     data-taking year (or the year simulated)
sqrt_s             float   centre-of-mass energy, TeV
process            str     physics process (``DYJetsToLL``, ``ttbar``...)
generator          str     event generator
cross_section_pb   float   cross-section, pb
sum_weights        float   generator sum of weights (auto: ``Runs`` tree ``genEventSumw``)
lumi_pb            float   integrated luminosity, pb^-1
runs               ranges  ``[[first, last], ...]`` run ranges (auto: ``Runs`` /
                           ``LuminosityBlocks`` trees)
lumi_blocks        int     number of (run, luminosity block) pairs (auto)
gen_events         int     generated events (auto: ``Runs`` tree ``genEventCount``)
=================  ======  ===========================================================

The names ``name``, ``dataset``, ``version``, ``events``, ``partitions`` and
``created`` are the dataset's own fields in a filter and cannot be metadata keys.
Pure functions: nothing here talks to Ceph.
"""

from __future__ import annotations

import json
import math
import os
import re

from ..errors import SkyhookError

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
RESERVED = frozenset({"name", "dataset", "version", "events", "partitions", "created"})
MAX_BYTES = 64 << 10    # the whole metadata as JSON (it is copied into every header and the index)

KNOWN: dict[str, str] = {
    "is_mc": "bool", "year": "int", "sqrt_s": "float", "process": "str", "generator": "str",
    "cross_section_pb": "float", "sum_weights": "float", "lumi_pb": "float",
    "runs": "ranges", "lumi_blocks": "int", "gen_events": "int",
}


class MetadataError(SkyhookError, ValueError):
    """Metadata that cannot be stored: a bad key, a value of the wrong type."""


def parse_value(text: str):
    """A ``--meta`` value: true/false, an integer, a float, JSON (a list or a quoted
    string), else the text itself."""
    t = text.strip()
    if t in ("true", "True"):
        return True
    if t in ("false", "False"):
        return False
    if re.fullmatch(r"[-+]?\d+", t):
        return int(t)
    try:
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", t, re.IGNORECASE):
            return float(t)
    except ValueError:
        pass
    if t[:1] in ("[", '"', "{"):
        try:
            return json.loads(t)
        except ValueError as e:
            raise MetadataError(f"metadata value {text!r} looks like JSON but is not: {e}") from None
    return text


def parse_assignments(items) -> dict:
    """``["year=2018", "is_mc=true"]`` -> ``{"year": 2018, "is_mc": True}`` (checked)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise MetadataError(f"--meta {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return check(out)


def load_file(path) -> dict:
    """Metadata from a YAML or JSON file holding one mapping (checked)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as e:
        raise MetadataError(f"cannot read the metadata file {path!r}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise MetadataError(f"the metadata file {path!r} is not text") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MetadataError(f"the metadata file {path!r} is not valid JSON: {e}") from None
    else:
        try:
            import yaml
        except ImportError:   # pragma: no cover - PyYAML is a dependency
            raise MetadataError("reading YAML metadata needs PyYAML (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise MetadataError(f"the metadata file {path!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise MetadataError(f"the metadata file {path!r} must hold a mapping of keys to values, "
                            f"not {type(data).__name__}")
    return check(data, where=f"metadata file {path!r}")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


def _coerce(key: str, v, where: str):
    kind = KNOWN.get(key)
    bad = MetadataError(f"{where}: {key} must be {_KIND_TEXT.get(kind, kind)}, not {v!r}")
    if kind is None:
        if _scalar(v) or (isinstance(v, list) and all(
                _scalar(x) or (isinstance(x, list) and all(_scalar(y) for y in x)) for x in v)):
            if isinstance(v, float) and not math.isfinite(v):
                raise bad
            return v
        raise MetadataError(f"{where}: {key} must be a string, number, boolean or a list of them, "
                            f"not {type(v).__name__}")
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("data", "mc", "sim", "simulation"):
            return v.lower() != "data"
        raise bad
    if kind == "int":
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise bad
    if kind == "float":
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
        raise bad
    if kind == "str":
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return str(v)
        raise bad
    if kind == "ranges":
        if isinstance(v, list) and all(
                isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                            for x in r) and r[0] <= r[1] for r in v):
            return [list(r) for r in v]
        raise bad
    raise AssertionError(kind)


_KIND_TEXT = {"bool": "true or false (or data/mc)", "int": "an integer", "float": "a finite number",
              "str": "text", "ranges": "a list of [first, last] integer ranges"}


def check(meta: dict, where: str = "metadata") -> dict:
    """Validate and normalise ``meta`` (keys, known types, total size); returns a copy."""
    if not isinstance(meta, dict):
        raise MetadataError(f"{where} must be a mapping, not {type(meta).__name__}")
    out = {}
    for key, v in meta.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise MetadataError(f"{where}: invalid key {key!r} (letters, digits, '_' and '.', "
                                "starting with a letter or '_', at most 64 characters)")
        if key in RESERVED:
            raise MetadataError(f"{where}: {key!r} is a field of every dataset, not a metadata key "
                                f"(reserved: {', '.join(sorted(RESERVED))})")
        if v is None:
            raise MetadataError(f"{where}: {key} has no value (use --unset {key} to remove a key)")
        out[key] = _coerce(key, v, where)
    if len(json.dumps(out)) > MAX_BYTES:
        raise MetadataError(f"{where} is larger than {MAX_BYTES} bytes as JSON")
    return out


def updated(old: dict, set_: dict | None = None, unset=()) -> dict:
    """``old`` with ``set_`` applied and the keys ``unset`` removed (unknown ones: error)."""
    new = dict(old or {})
    for key in unset or ():
        if key not in new:
            raise MetadataError(f"cannot unset {key!r}: the dataset has no such key "
                                f"(keys: {', '.join(sorted(new)) or 'none'})")
        del new[key]
    new.update(check(set_ or {}))
    return check(new)


def changes(old: dict, new: dict) -> str:
    """A one-line summary of what changed between two metadata dicts (for ``describe``)."""
    parts = []
    for k in sorted(set(old) | set(new)):
        if k not in new:
            parts.append(f"-{k}")
        elif k not in old:
            parts.append(f"+{k}={_short(new[k])}")
        elif old[k] != new[k]:
            parts.append(f"{k}={_short(new[k])}")
    return " ".join(parts) or "no change"


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 40 else s[:37] + "..."
