"""The dataset manifest: what a dataset is, as committed in the pool.

A manifest names the dataset's partitions (object, event range, bytes, statistics),
its Arrow schema, the provenance of every source file and the encoding.  It lives in
the object ``manifest.<dataset>`` (JSON data, omap key ``version``) and is replaced
in one guarded RADOS operation, so a reader sees the old version or the new one,
never a mix (formats/layout.md).  ``manifest._datasets`` lists the datasets.

Readers trust a version they checked for ``defaults.MANIFEST_TRUST`` seconds
(ManifestCache), and every change waits that long before it returns (``wait_out_trust``):
a query that starts after an append has returned never sees the older version, and a
burst of queries pays one version check per window instead of one each.

This module reads, writes and commits manifests; it does not read partitions or
source files (skyhook_py.transcode does).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re
import time

import pyarrow as pa

from .. import defaults
from ..errors import (
    ClusterError,
    ConcurrentUpdateError,
    DatasetExistsError,
    SkyhookError,
    UnknownDatasetError,
    UnknownVersionError,
)
from ..query import ir

FORMAT = "skyhook-manifest"
FORMAT_VERSION = 2        # 1: the whole manifest in one JSON object (still read)
INDEX_OBJECT = "manifest._datasets"
VERSION_KEY = "version"
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def manifest_object(dataset: str) -> str:
    return f"manifest.{dataset}"


def check_dataset_name(dataset: str) -> str:
    if not isinstance(dataset, str) or not DATASET_NAME.fullmatch(dataset):
        raise SkyhookError(
            f"invalid dataset name {dataset!r}: use letters, digits, '_', '.', '-' "
            "(starting with a letter or digit, at most 128 characters)")
    return dataset


@dataclasses.dataclass
class Partition:
    object: str
    event_start: int
    event_stop: int
    bytes: int
    source: int
    entry_start: int
    entry_stop: int
    stats: dict
    # block checksums of the object (storage/checksum.py); None in partitions
    # written before 2026-12, which are then not verified
    checksum: dict | None = None

    @property
    def num_events(self) -> int:
        return self.event_stop - self.event_start


@dataclasses.dataclass
class Source:
    path: str
    name: str
    size: int
    sha256: str
    tree: str
    entries: int
    event_start: int


class Manifest:
    """A committed (or about to be committed) version of a dataset.

    Built in memory by the writing operations (``partitions`` a list), or loaded from
    the pool (``load_manifest``): then the header is parsed and the partition table and
    statistics stay in their pieces (storage/pieces.py) until asked for, column by
    column (``partition_table``, ``column_stats``); ``partitions`` materialises every
    partition with all its statistics, for the operations that need them (reshard,
    describe), never on the query path.
    """

    def __init__(self, dataset: str, version: int, schema: pa.Schema, partitions=None,
                 sources=None, encoding: dict | None = None, created: str = "",
                 previous_version: int | None = None, *, pieces=None, base=None,
                 provenance: dict | None = None, metadata: dict | None = None, change: str = ""):
        self.dataset, self.version, self.schema = dataset, version, schema
        # catalogue metadata (skyhook_py.catalogue.metadata) and what this version changed
        self.metadata = dict(metadata or {})
        self.change = change
        self._partitions = list(partitions) if partitions is not None else None
        self._sources = list(sources) if sources is not None else None
        self._new_sources: list[Source] = []
        self.encoding = dict(encoding or {})  # {"format": "arrow"|"parquet", "compression": ...}
        self.created = created
        self.previous_version = previous_version
        self.pieces = pieces      # pieces.Pieces of a loaded version 2 manifest
        self.base = base          # an append: the loaded version whose pieces this one shares
        # how the dataset was made when not from files (a skim: source dataset and
        # version, the query, the time; transcode/skim.py), else None
        self.provenance = provenance
        self._types = None

    def __repr__(self):
        return (f"Manifest({self.dataset!r}, v{self.version}, {self.num_partitions} partitions, "
                f"{len(self.schema)} columns)")

    # -- partitions ------------------------------------------------------------------
    @property
    def partitions(self) -> list[Partition]:
        if self._partitions is None:
            if self.base is not None:
                self._partitions = self.base.partitions + self._new
            else:
                self._partitions = self.pieces.materialize(self.schema.names)
        return self._partitions

    @partitions.setter
    def partitions(self, value):
        self._partitions = list(value)

    @property
    def num_partitions(self) -> int:
        if self._partitions is not None:
            return len(self._partitions)
        if self.base is not None:
            return self.base.num_partitions + len(self._new)
        return self.pieces.num_partitions

    def partition_table(self) -> dict:
        """NumPy arrays over the partitions in event order: object (str), event_start,
        event_stop, bytes, source, entry_start, entry_stop (int64), checksum (JSON text or None)."""
        if self._partitions is None and self.pieces is not None:
            return self.pieces.table()
        from . import pieces
        return pieces.table_arrays(self.partitions)

    def partition_checksum(self, index: int) -> dict | None:
        """The block checksums of partition ``index`` (None: written before checksums),
        from the partition table, without materialising every partition's statistics."""
        if self._partitions is None and self.pieces is not None:
            from . import pieces
            text = self.pieces.table()[pieces.CHECKSUM_FIELD][index]
            return None if text is None else json.loads(text)
        return self.partitions[index].checksum

    def column_stats(self, name: str):
        """Statistics of column ``name`` over the partitions: a float64 array of shape
        (len(pieces.STAT_FIELDS), num_partitions), NaN where absent; None for an
        unknown column."""
        if name not in self.column_types():
            return None
        if self._partitions is None and self.pieces is not None:
            return self.pieces.column(self.schema.names.index(name))
        from . import pieces
        return pieces.stats_matrix(self.partitions, [name])[0]

    def column_bytes(self) -> dict[str, int] | None:
        """Uncompressed bytes per column over the dataset (None if some partition has
        no per-column sizes)."""
        if self._partitions is None and self.pieces is not None:
            return self.pieces.column_bytes(self.schema.names)
        sizes: dict[str, int] = {}
        for p in self.partitions:
            cols = (p.stats or {}).get("columns") or {}
            if not cols or not all("bytes" in s for s in cols.values()):
                return None
            for name, s in cols.items():
                sizes[name] = sizes.get(name, 0) + int(s["bytes"])
        return sizes

    def identity(self) -> tuple:
        """What tells two committed states of a dataset apart (cheap for a loaded one)."""
        if self.pieces is not None:
            return (self.version, self.created, self.pieces.writer)
        import hashlib
        h = hashlib.blake2b(digest_size=12)
        for p in self.partitions:
            h.update(p.object.encode() + b"\0")
        return (self.version, self.created, h.hexdigest())

    # -- sources (in pieces too for a loaded version 2 manifest) ----------------------
    @property
    def sources(self) -> list[Source]:
        if self._sources is None:
            if self.base is not None:
                self._sources = self.base.sources + self._new_sources
            elif self.pieces is not None:
                self._sources = self.pieces.sources()
            else:
                self._sources = []
        return self._sources

    @sources.setter
    def sources(self, value):
        self._sources = list(value)

    @property
    def num_sources(self) -> int:
        if self._sources is not None:
            return len(self._sources)
        if self.base is not None:
            return self.base.num_sources + len(self._new_sources)
        return self.pieces.num_sources if self.pieces is not None else 0

    def known_sources(self) -> dict[str, str]:
        """sha256 -> path of every source (for an append's duplicate check; reads the
        source pieces' columns, builds no Source objects)."""
        if self._sources is None and self.base is None and self.pieces is not None:
            return self.pieces.known_sources()
        return {s.sha256: s.path for s in self.sources}

    def first_tree(self) -> str | None:
        if self._sources is None and self.base is None and self.pieces is not None:
            return self.pieces.first_tree()
        return self.sources[0].tree if self.sources else None

    @property
    def num_events(self) -> int:
        if self._sources is None and self.pieces is not None and self.base is None:
            return int(self.pieces.header["num_events"])
        if self._sources is None and self.base is not None:
            return self.base.num_events + sum(s.entries for s in self._new_sources)
        return sum(s.entries for s in self.sources)

    def column_types(self) -> dict[str, ir.ColumnType]:
        if self._types is None:
            self._types = {f.name: column_type(f.type, f.name) for f in self.schema}
        return self._types

    # -- JSON (format_version 1: the whole manifest in one object; describe and the
    # gRPC DatasetDescription still speak it) ---------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "format_version": 1,
            "dataset": self.dataset, "version": self.version,
            "created": self.created or _now(),
            "previous_version": self.previous_version,
            "metadata": dict(self.metadata), "change": self.change,
            "encoding": dict(self.encoding),
            "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode("ascii"),
            "columns": {n: {"type": t.kind, "list": t.is_list} for n, t in self.column_types().items()},
            "num_events": self.num_events,
            "partitions": [_partition_dict(p) for p in self.partitions],
            "sources": [dataclasses.asdict(s) for s in self.sources],
            **({"provenance": self.provenance} if self.provenance is not None else {}),
        }

    def to_json(self) -> bytes:
        # allow_nan: statistics of float columns may be +-Infinity (formats/README.md)
        return json.dumps(self.to_dict(), indent=1, allow_nan=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "manifest") -> "Manifest":
        try:
            d = json.loads(data)
            if d.get("format") != FORMAT:
                raise ValueError(f"not a skyhook manifest (format {d.get('format')!r})")
            if d.get("format_version") != 1:
                raise ValueError(f"manifest format_version {d.get('format_version')!r}, "
                                 f"this Skyhook reads 1 and {FORMAT_VERSION}")
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
            return cls(
                dataset=d["dataset"], version=int(d["version"]), schema=schema,
                partitions=[Partition(**p) for p in d["partitions"]],
                sources=[Source(**s) for s in d["sources"]],
                encoding=dict(d["encoding"]), created=d.get("created", ""),
                previous_version=d.get("previous_version"), provenance=d.get("provenance"),
                metadata=d.get("metadata") or {}, change=d.get("change", ""))
        except (ValueError, KeyError, TypeError) as e:
            raise SkyhookError(f"corrupt {where}: {e}") from e


def appended(old: Manifest, new_partitions: list[Partition], new_sources: list[Source],
             encoding: dict, schema: pa.Schema | None = None, metadata: dict | None = None,
             change: str = "") -> Manifest:
    """Version ``old.version + 1``: ``old``'s partitions followed by ``new_partitions``,
    sharing ``old``'s pieces (only the new partitions are written at the commit).
    ``metadata``: the new version's (default: ``old``'s)."""
    m = Manifest(dataset=old.dataset, version=old.version + 1, schema=schema or old.schema,
                 partitions=None, sources=None, encoding=encoding,
                 previous_version=old.version, base=old, provenance=old.provenance,
                 metadata=old.metadata if metadata is None else metadata, change=change)
    m._new = list(new_partitions)
    m._new_sources = list(new_sources)
    return m

def _partition_dict(p: Partition) -> dict:
    d = dataclasses.asdict(p)
    if d["checksum"] is None:  # a partition from before checksums: written as it was read
        del d["checksum"]
    return d


def column_type(t: pa.DataType, name: str = "?") -> ir.ColumnType:
    """The IR's view of an Arrow type: value kind and whether it is a list."""
    is_list = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
    v = t.value_type if is_list else t
    if pa.types.is_boolean(v):
        kind = "bool"
    elif pa.types.is_signed_integer(v):
        kind = "int"
    elif pa.types.is_unsigned_integer(v):
        kind = "uint"
    elif pa.types.is_floating(v):
        kind = "float"
    else:
        raise SkyhookError(f"column {name!r} has type {t}, which Skyhook cannot query")
    return ir.ColumnType(kind, is_list, v.bit_width if kind in ("int", "uint") else None)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the pool ----------------------------------------------------------------------
def list_datasets(store) -> list[str]:
    """Names of the datasets in the pool (from the ``manifest._datasets`` index)."""
    try:
        return sorted(store.get_omap(INDEX_OBJECT))
    except FileNotFoundError:
        return []


def _read_whole(store, obj: str, deadline: float | None = None) -> bytes:
    # one read op (atomic, so never half of an old and half of a new header), no stat
    # first: a read longer than the object returns the object; only one that fills the
    # buffer is read again with a larger one
    length = 1 << 20
    while True:
        data = (store.read(obj, length=length) if deadline is None
                else store.read(obj, length=length, deadline=deadline))
        if len(data) < length:
            return data
        length *= 4


def version_object(dataset: str, version: int) -> str:
    """The immutable copy of ``dataset``'s header at ``version`` (kept for ``ds@vN``)."""
    return f"manifest.{dataset}@v{int(version)}"


VERSION_REF = re.compile(r"v?(\d{1,18})")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"ds"`` -> ("ds", None); ``"ds@v3"`` (or ``"ds@3"``) -> ("ds", 3)."""
    if not isinstance(ref, str):
        raise SkyhookError(f"a dataset name must be text, not {type(ref).__name__}")
    name, sep, v = ref.partition("@")
    if not sep:
        return name, None
    m = VERSION_REF.fullmatch(v)
    if m is None or int(m.group(1)) < 1:
        raise SkyhookError(f"invalid dataset version {ref!r}: write DATASET@vN with N >= 1 (e.g. {name}@v1)")
    return name, int(m.group(1))


def _parse_header(store, data: bytes, where: str) -> Manifest:
    try:
        d = json.loads(data)
        fv = d.get("format_version") if isinstance(d, dict) else None
    except ValueError as e:
        raise SkyhookError(f"corrupt {where}: {e}") from e
    if fv == 1:
        return Manifest.from_json(data, where=where)
    from . import pieces
    return pieces.from_header(store, d, where)


def load_manifest(store, dataset: str, deadline: float | None = None,
                  version: int | None = None) -> Manifest:
    """The current manifest of ``dataset``; UnknownDatasetError (with close matches) if none.
    Reads the header only (format 2); the pieces are read when asked for.  ``deadline``
    (a time.monotonic() value) bounds the header read (DeadlineExceeded after).

    ``version`` (or a reference ``"ds@v3"``): that committed version, from the current
    header if it is the current one, else from its kept copy; UnknownVersionError if it
    was never committed or gc collected it."""
    dataset, ref_version = parse_ref(dataset)
    version = ref_version if version is None else version
    obj = manifest_object(dataset)
    try:
        data = _read_whole(store, obj, deadline)
    except FileNotFoundError:
        raise UnknownDatasetError(dataset, list_datasets(store)) from None
    m = _parse_header(store, data, f"manifest of dataset {dataset!r}")
    if version is None or m.version == version:
        return m
    if version > m.version:
        raise UnknownVersionError(f"dataset {dataset!r} has no version {version} "
                                  f"(its current version is {m.version})", dataset)
    try:
        data = _read_whole(store, version_object(dataset, version), deadline)
    except FileNotFoundError:
        from . import versions
        kept = versions.kept_versions(store, dataset, m.version)
        raise UnknownVersionError(
            f"version {version} of dataset {dataset!r} is no longer kept (gc collected it); "
            f"kept versions: {', '.join(f'v{v}' for v in kept)}", dataset) from None
    old = _parse_header(store, data, f"version {version} of dataset {dataset!r}")
    if old.version != version or old.dataset != dataset:
        raise SkyhookError(f"corrupt copy {version_object(dataset, version)!r}: it holds version "
                           f"{old.version} of {old.dataset!r}")
    return old


def current_version(store, dataset: str) -> int | None:
    """The committed version of ``dataset`` (omap key), None if the dataset does not exist."""
    try:
        v = store.get_omap_keys(manifest_object(dataset), (VERSION_KEY,)).get(VERSION_KEY)
    except FileNotFoundError:
        return None
    return int(v) if v is not None else None


def wait_out_trust() -> None:
    """Return once no reader can still serve a version it checked before this call:
    a ManifestCache trusts a check for ``defaults.MANIFEST_TRUST`` seconds, timed from
    before its read was sent, so after this long every later query checks again.  Every
    change to what a dataset's current version names (commit, delete, gc) calls it after
    the change and before it returns or removes what an older version named.  Needs no
    synchronised clocks: both sides time a local interval."""
    time.sleep(defaults.MANIFEST_TRUST)


def commit(store, manifest: Manifest, expected_version: int | None, before_header=None) -> None:
    """Write the new pieces of ``manifest``, then replace the dataset's header with it if
    its version is still ``expected_version`` (None: the dataset must not exist), then
    update the index, then wait out the readers' trust in the older version
    (wait_out_trust): a query started after the return sees the new version.

    Before anything is written, the header being replaced (version ``expected_version``)
    is copied to ``manifest.<dataset>@v<N>`` (version_object), so that ``ds@vN`` stays
    readable after the swap until gc collects it.  The copy's content is that committed
    version's header whoever writes it (the header and its omap version are swapped
    together), so a copy written by a committer that then loses the race is still right.

    Losing the race raises ConcurrentUpdateError (DatasetExistsError for a creation
    that lost to another creator); the header was not applied then, and the pieces
    written for it are removed.  After any other failure the outcome is unknown and the
    pieces stay (a killed committer also leaves them to gc).
    """
    from . import pieces

    if not manifest.created:
        manifest.created = _now()
    obj = manifest_object(manifest.dataset)
    expected = None if expected_version is None else str(expected_version)
    if expected_version is not None:
        try:
            _keep_version_copy(store, manifest.dataset, expected_version)
        except (ConcurrentUpdateError, NotCommittedError):
            raise
        except Exception as e:   # nothing was swapped: a definite failure
            raise NotCommittedError(
                f"nothing was committed to dataset {manifest.dataset!r}: keeping a copy of its version "
                f"{expected_version} failed ({e})") from e
    header, written = pieces.write_pieces(store, manifest)
    try:
        if before_header is not None:
            before_header()   # tests: a fault between the pieces and the header swap
        store.replace_guarded(obj, header, VERSION_KEY, expected, str(manifest.version))
    except BaseException as e:
        # only a definite loss (the guard refused the swap) makes the pieces garbage; after
        # any other failure the swap may have been applied (a timed-out write), and the
        # pieces then belong to the current version: left for gc, which keeps named ones
        if isinstance(e, (FileExistsError, InterruptedError)):
            for name in written:
                try:
                    store.remove(name)
                except Exception:  # noqa: BLE001 - a failure path must not hide the first error
                    pass
        if isinstance(e, FileExistsError):
            raise DatasetExistsError(
                f"dataset {manifest.dataset!r} was created by another writer meanwhile") from e
        if isinstance(e, InterruptedError):
            raise ConcurrentUpdateError(
                f"dataset {manifest.dataset!r} changed while this operation ran (expected version "
                f"{expected_version}); nothing was committed, retry the operation") from e
        raise
    try:
        update_index(store, manifest.dataset, manifest.version, index_entry(manifest))
    finally:   # the swap was applied: no return, not even a failed one, before readers know
        wait_out_trust()


class NotCommittedError(ClusterError):
    """A commit that definitely did not happen (its header was not swapped) for a reason
    other than a lost race, e.g. a key that may not write."""


def _keep_version_copy(store, dataset: str, version: int) -> None:
    """Copy the current header (which must be ``version``) to its immutable name."""
    try:
        data = _read_whole(store, manifest_object(dataset))
    except FileNotFoundError:
        raise ConcurrentUpdateError(f"dataset {dataset!r} was deleted while this operation ran; "
                                    "nothing was committed") from None
    try:
        got = json.loads(data).get("version")
    except (ValueError, AttributeError) as e:
        raise SkyhookError(f"corrupt manifest of dataset {dataset!r}: {e}") from e
    if got != version:
        raise ConcurrentUpdateError(
            f"dataset {dataset!r} changed while this operation ran (expected version {version}, "
            f"found {got}); nothing was committed, retry the operation")
    store.write_full(version_object(dataset, version), data)


class ManifestCache:
    """Loaded manifests by dataset, kept per version: a lookup costs one small omap read
    of the header object (its ``version`` key), at most one per
    ``defaults.MANIFEST_TRUST`` seconds per dataset; a version that changed (an append, a
    reshard) is loaded again.  A stale manifest is never served to a query that started
    after the change returned: every change waits out the trust (wait_out_trust).  The
    loaded manifest keeps the statistics columns that queries read, so a warm query reads
    no piece.  Shared by the Session and the coordinator (which queries through a Session)."""

    def __init__(self, size: int = 16):
        import collections
        import threading

        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._checked: dict[str, float] = {}   # dataset -> time.monotonic() before its last check
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(16)]   # checks, by dataset
        self.checks = 0     # version reads made (tests, benchmarks)

    def get(self, store, dataset: str) -> Manifest:
        dataset, ref = parse_ref(dataset)
        if ref is not None:
            return self._check(store, dataset, ref)
        m = self._trusted(dataset)
        if m is not None:
            return m
        # one check at a time per dataset: the lookups queued behind it are served by it
        # (it was sent after they arrived), not by 32 checks at once under load
        with self._stripes[hash(dataset) % len(self._stripes)]:
            m = self._trusted(dataset)
            return m if m is not None else self._check(store, dataset, None)

    def _trusted(self, dataset: str) -> Manifest | None:
        now = time.monotonic()
        with self._lock:
            m = self._entries.get(dataset)
            # what every writer waits (read at each call: tests change it)
            if m is not None and now - self._checked[dataset] < defaults.MANIFEST_TRUST:
                self._entries.move_to_end(dataset)
                return m
        return None

    def _check(self, store, dataset: str, ref: int | None) -> Manifest:
        # timed before the read is sent: a commit applied after this moment is seen by it
        started = time.monotonic()
        self.checks += 1
        v = current_version(store, dataset)
        if v is None:
            raise UnknownDatasetError(dataset, list_datasets(store))
        if ref is not None and ref != v:
            # an older version: not cached (gc may collect it and its partitions)
            return load_manifest(store, dataset, version=ref)
        with self._lock:
            m = self._entries.get(dataset)
            if m is not None and m.version == v:
                self._entries.move_to_end(dataset)
                self._checked[dataset] = started
                return m
        m = load_manifest(store, dataset)
        with self._lock:
            self._entries[dataset] = m
            self._checked[dataset] = started
            self._entries.move_to_end(dataset)
            while len(self._entries) > self.size:
                gone, _ = self._entries.popitem(last=False)
                self._checked.pop(gone, None)
        return m


def index_entry(m: Manifest) -> dict:
    """What the listing index records of a committed version: enough to list and filter
    datasets without reading their headers."""
    return {"version": m.version, "created": m.created, "events": m.num_events,
            "partitions": m.num_partitions, "metadata": dict(m.metadata)}


def decode_index_value(value: bytes) -> dict:
    """An index value: JSON (index_entry), or a bare version number (before 2026-12)."""
    try:
        d = json.loads(value)
    except ValueError:
        return {}
    if isinstance(d, int):
        return {"version": d}
    return d if isinstance(d, dict) else {}


def read_index(store) -> dict[str, dict]:
    """Every dataset's index entry (one omap read of ``manifest._datasets``)."""
    try:
        return {k: decode_index_value(v) for k, v in store.get_omap(INDEX_OBJECT).items()}
    except FileNotFoundError:
        return {}


def update_index(store, dataset: str, version: int | None, entry: dict | None = None) -> None:
    """Record (or with None remove) ``dataset`` in the listing index.

    The entry only moves forward: it is replaced with a guarded omap write (compare the
    value read, then set) unless it records a newer version already, so two committers
    whose index updates arrive out of order leave the newer entry.  ``entry``: the
    version's index_entry (metadata, counts); None records the version alone."""
    if version is None:
        try:
            store.set_omap(INDEX_OBJECT, {}, remove_keys=(dataset,))
        except FileNotFoundError:
            pass
        return
    value = json.dumps(dict(entry or {}, version=int(version)), separators=(",", ":"),
                       sort_keys=True).encode()
    for _ in range(16):
        try:
            cur = store.get_omap_keys(INDEX_OBJECT, (dataset,)).get(dataset)
        except FileNotFoundError:
            store.set_omap(INDEX_OBJECT, {dataset: value})   # creates the index object
            return
        if cur is not None:
            recorded = decode_index_value(cur).get("version")
            if cur == value or (isinstance(recorded, int) and recorded > version):
                return
        try:
            store.set_omap_guarded(INDEX_OBJECT, dataset, cur or b"", value)
            return
        except InterruptedError:
            continue   # another committer's update came between: read again
    # not ConcurrentUpdateError: the header swap may be done, and that error means "not
    # committed" to the callers (who would discard the committed partitions)
    raise ClusterError(f"the index entry of dataset {dataset!r} kept changing; "
                       "it is repaired by the dataset's next commit")
