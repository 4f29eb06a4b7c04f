"""The kept versions of a dataset and gc's retention policy.

Every commit first copies the header it replaces to ``manifest.<dataset>@v<N>``
(storage/manifest.py), so a dataset's versions are its current header plus the copies
that gc has not collected.  gc collects the oldest first, so the kept versions are
always the current one and a run of its predecessors: they are found by reading
backwards from the current version until a copy is missing, without listing the pool
(which the query key may not do).
"""

from __future__ import annotations

import dataclasses
import datetime
import re

from . import manifest as mf

_COPY = re.compile(r"v(\d{1,18})")


def copy_dataset(obj: str) -> tuple[str, int] | None:
    """(dataset, version) if ``obj`` is a kept version's header copy, else None."""
    if not obj.startswith("manifest.") or "@" not in obj:
        return None
    ds, _, rest = obj[len("manifest."):].rpartition("@")
    m = _COPY.fullmatch(rest)
    return (ds, int(m.group(1))) if m else None


def kept_versions(store, dataset: str, current: int) -> list[int]:
    """The versions of ``dataset`` that can be read, oldest first (``current`` last)."""
    out = [current]
    v = current - 1
    while v >= 1 and store.exists(mf.version_object(dataset, v)):
        out.append(v)
        v -= 1
    return sorted(out)


@dataclasses.dataclass
class VersionInfo:
    version: int
    created: str
    num_events: int
    num_partitions: int
    change: str
    metadata: dict
    current: bool


def history(store, dataset: str) -> list[VersionInfo]:
    """What ``describe`` shows of each kept version (reads each kept header)."""
    cur = mf.load_manifest(store, mf.parse_ref(dataset)[0])
    dataset = cur.dataset
    out = []
    for v in kept_versions(store, dataset, cur.version):
        m = cur if v == cur.version else mf.load_manifest(store, dataset, version=v)
        out.append(VersionInfo(version=m.version, created=m.created, num_events=m.num_events,
                               num_partitions=m.num_partitions, change=m.change or "",
                               metadata=dict(m.metadata), current=v == cur.version))
    return out


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def to_collect(versions: list[tuple[int, str]], keep_versions: int = 1, keep_days: float | None = None,
               now: datetime.datetime | None = None) -> list[int]:
    """Which versions a retention policy collects, given ``(version, created)`` of every
    kept version (the current one included; never collected).

    A version is kept if it is among the ``keep_versions`` newest, or (``keep_days``) if
    it was current at some time in the last ``keep_days`` days, i.e. the version after it
    was created less than that long ago.  Everything older than the newest version that
    goes is collected too, so the kept versions stay a contiguous run."""
    if keep_versions < 1:
        raise ValueError(f"keep_versions must be at least 1 (the current version), not {keep_versions}")
    if keep_days is not None and keep_days < 0:
        raise ValueError(f"keep_days must not be negative, not {keep_days}")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    vs = sorted(versions)
    newest_first = list(reversed(vs))
    cut = None
    for i, (v, _) in enumerate(newest_first):
        if i < keep_versions:
            continue
        if keep_days is not None:
            superseded = _parse_time(newest_first[i - 1][1])
            if superseded is None or (now - superseded).total_seconds() < keep_days * 86400:
                continue
        cut = v
        break
    if cut is None:
        return []
    return [v for v, _ in vs if v <= cut]
