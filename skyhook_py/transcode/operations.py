"""Dataset operations: ingest, append, reshard, describe, list, delete, gc.

Every writing operation follows one protocol (formats/layout.md): check everything
that can be checked up front (files, trees, schemas, names), write the partition
objects under a fresh writer id, then commit the manifest last in one guarded RADOS
operation.  Until that commit nothing is visible; a failure removes what it wrote,
and a process killed mid-way leaves only unnamed partitions that ``gc`` removes.
A committer that loses the race to another one gets ConcurrentUpdateError.

``SKYHOOK_FAULT`` (tests only) injects a SIGKILL or a sleep at named points:
``kill-after-partitions=N``, ``kill-before-commit``, ``kill-after-pieces`` (the
manifest pieces written, the header not swapped), ``kill-after-commit``,
``sleep-per-partition=SECONDS`` (comma-separated).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import secrets
import signal
import threading
import time
import warnings

import numpy as np
import pyarrow as pa

from .. import defaults
from ..errors import (ClusterError, ConcurrentUpdateError, DatasetExistsError, InputFileError, SkyhookError,
                      UnknownDatasetError)
from ..progress import Progress
from ..storage import checksum
from ..storage import manifest as mf
from ..storage import pieces
from ..storage.summary import history_lines
from ..storage.manifest import Manifest, Partition, Source
from ..catalogue import metadata as meta_mod
from ..storage import versions as versions_mod
from . import encoder, partitioner, readers, runs, stats

DEFAULT_PARTITION_BYTES = defaults.PARTITION_BYTES
READ_STEP_BYTES = 16 << 20   # uncompressed bytes read from a source at a time


# -- fault injection (tests) -------------------------------------------------------------
def _faults() -> dict:
    out = {}
    for item in filter(None, os.environ.get("SKYHOOK_FAULT", "").split(",")):
        k, _, v = item.partition("=")
        out[k.strip()] = v.strip()
    return out


def _fault(point: str, count: int | None = None):
    f = _faults()
    if not f:
        return
    if point == "partition":
        if "sleep-per-partition" in f:
            time.sleep(float(f["sleep-per-partition"]))
        if "kill-after-partitions" in f and count is not None and count >= int(f["kill-after-partitions"]):
            os.kill(os.getpid(), signal.SIGKILL)
    elif f"kill-{point}" in f:
        os.kill(os.getpid(), signal.SIGKILL)


# -- partition object names ---------------------------------------------------------------
def partition_object(dataset: str, writer: str, index: int) -> str:
    return f"part.{dataset}.{writer}.{index:06d}"


def partition_dataset(obj: str) -> str | None:
    """The dataset a partition object belongs to, None if ``obj`` is not one."""
    head, _, rest = obj.partition(".")
    parts = rest.rsplit(".", 2)
    if head != "part" or len(parts) != 3:
        return None
    ds, writer, index = parts
    if len(writer) != 12 or any(c not in "0123456789abcdef" for c in writer) \
            or len(index) != 6 or not index.isdigit():
        return None
    return ds


def _dataset_partitions(store, dataset: str) -> list[str]:
    return [o for o in store.list_objects(f"part.{dataset}.") if partition_dataset(o) == dataset]


def _dataset_pieces(store, dataset: str) -> list[str]:
    return [o for o in store.list_objects(f"manifest.{dataset}@")
            if pieces.piece_dataset(o) == dataset]


def _writable(dataset: str, what: str) -> str:
    """``dataset`` as a writing operation takes it: a name, never ``name@vN``."""
    if isinstance(dataset, str) and "@" in dataset:
        raise SkyhookError(f"{dataset!r} names a kept version, which is read-only; {what} acts on "
                           f"the dataset ({dataset.partition('@')[0]!r}) and commits a new version")
    return mf.check_dataset_name(dataset)


def _version_copies(store, dataset: str) -> dict[int, str]:
    """version -> object of every kept header copy of ``dataset`` (pool listing)."""
    out = {}
    for o in store.list_objects(f"manifest.{dataset}@v"):
        got = versions_mod.copy_dataset(o)
        if got is not None and got[0] == dataset:
            out[got[1]] = o
    return out


# -- sources -----------------------------------------------------------------------------
@dataclasses.dataclass
class _Job:
    """One stream of events to partition: a source file, or a source's old partitions."""

    source: int          # index in the manifest's sources
    event_start: int     # dataset-wide number of the source's entry 0
    entries: int
    open_batches: object  # () -> iterator of RecordBatches of entries [0, entries)
    label: str


class _OpenReaders:
    """Readers opened by the probe, kept (up to a few) for the writer of the same
    operation: opening a wide TTree costs about a second.  Closed at the end."""

    KEEP = 8

    def __init__(self):
        self._readers: dict[str, readers.Reader] = {}
        self._lock = threading.Lock()

    def keep(self, path: str, r: readers.Reader):
        with self._lock:
            if len(self._readers) < self.KEEP and path not in self._readers:
                self._readers[path] = r
                return
        r.close()

    def take(self, path: str) -> readers.Reader | None:
        with self._lock:
            return self._readers.pop(path, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def _probe(path: str, tree, strict, hdf5_mapping, opened: _OpenReaders) -> tuple[Source, pa.Schema]:
    r = readers.open_reader(path, tree, strict, hdf5_mapping)
    entries, schema, tree_name = r.entries, r.schema, r.tree
    opened.keep(os.path.abspath(path), r)
    sha = readers.file_sha256(path)
    return Source(path=os.path.abspath(path), name=os.path.basename(path),
                  size=os.path.getsize(path), sha256=sha, tree=tree_name,
                  entries=entries, event_start=0), schema


def _schema_difference(expected: pa.Schema, got: pa.Schema) -> str:
    e, g = {f.name: f.type for f in expected}, {f.name: f.type for f in got}
    parts = []
    missing = [n for n in e if n not in g]
    extra = [n for n in g if n not in e]
    changed = [f"{n} ({e[n]} vs {g[n]})" for n in e if n in g and e[n] != g[n]]
    if missing:
        parts.append("missing " + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    if extra:
        parts.append("extra " + ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else ""))
    if changed:
        parts.append("different types " + ", ".join(changed[:10]))
    if not parts and expected.names != got.names:
        parts.append("columns in a different order")
    return "; ".join(parts)


def _probe_all(paths, tree, strict, hdf5_mapping, workers, opened, known_sha=(), on_duplicate="skip"):
    """Open and check every file (in parallel); drop duplicates.  -> [(Source, schema)]."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise InputFileError("no input files given")
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        probed = list(pool.map(lambda p: _probe(p, tree, strict, hdf5_mapping, opened), paths))
    out, seen = [], dict(known_sha)
    for src, schema in probed:
        if src.sha256 in seen:
            msg = f"{src.path} has the same content (sha256) as {seen[src.sha256]}, which is in the dataset"
            if on_duplicate == "error":
                raise InputFileError(msg)
            warnings.warn(msg + "; skipped", readers.IngestWarning, stacklevel=3)
            continue
        seen[src.sha256] = src.path
        out.append((src, schema))
    return out


# -- writing partitions -----------------------------------------------------------------
class _Writer:
    """Writes the partitions of one operation under one writer id, in parallel."""

    def __init__(self, store, dataset, schema, encoding, target_bytes, target_events,
                 workers, progress: Progress):
        self.store, self.dataset, self.schema = store, dataset, schema
        self.encoding = encoding
        self.target_bytes, self.target_events = target_bytes, target_events
        self.workers = max(1, workers)
        self.progress = progress
        self.writer = secrets.token_hex(6)
        self.written: list[str] = []
        self._lock = threading.Lock()
        self._next = 0
        self._cancel = threading.Event()

    def _name(self) -> str:
        with self._lock:
            i = self._next
            self._next += 1
            return partition_object(self.dataset, self.writer, i)

    def _run(self, job: _Job) -> list[Partition]:
        out = []
        entry = 0
        for table in partitioner.partitions(job.open_batches(), self.schema,
                                            self.target_bytes, self.target_events):
            if self._cancel.is_set():
                break
            if table.schema != self.schema:
                raise InputFileError(f"{job.label}: read as {_schema_difference(self.schema, table.schema)}")
            out.append(self.write_partition(table, job.source, job.event_start + entry, entry))
            entry += table.num_rows
        if entry != job.entries and not self._cancel.is_set():
            raise InputFileError(f"{job.label}: read {entry} entries, expected {job.entries}")
        self.progress.update(files=1)
        return out

    def write_partition(self, table: pa.Table, source: int, event_start: int, entry: int) -> Partition:
        """Encode ``table`` and write it as the writer's next partition object (with its
        statistics, block checksums and written-time xattrs); returns its Partition."""
        data = encoder.encode(table, self.encoding["format"], self.encoding["compression"])
        st = stats.table_stats(table)
        name = self._name()
        with self._lock:
            self.written.append(name)
        crcs = checksum.block_crcs(data)
        self.store.write_full(name, data, {stats.XATTR: stats.to_json(st),
                                           checksum.XATTR: checksum.xattr_value(data, crcs),
                                           WRITTEN_XATTR: repr(time.time()).encode()})
        n = table.num_rows
        part = Partition(object=name, event_start=event_start, event_stop=event_start + n,
                         bytes=len(data), source=source, entry_start=entry, entry_stop=entry + n,
                         stats=st, checksum=checksum.manifest_entry(data, crcs))
        self.progress.update(events=n, bytes=table.nbytes)
        with self._lock:
            count = len(self.written)
        _fault("partition", count)
        return part

    def run(self, jobs: list[_Job]) -> list[Partition]:
        parts: list[Partition] = []
        try:
            with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(self._run, j) for j in jobs]
                try:
                    for f in concurrent.futures.as_completed(futures):
                        parts.extend(f.result())
                except BaseException:
                    self._cancel.set()
                    for f in futures:
                        f.cancel()
                    raise
        except BaseException:
            self.discard()
            raise
        parts.sort(key=lambda p: p.event_start)
        return parts

    def discard(self):
        """Remove what this writer wrote (best effort: gc removes anything left)."""
        for name in list(self.written):
            try:
                self.store.remove(name)
            except Exception:  # noqa: BLE001 - a failure path must not hide the first error
                pass


def _source_batches(src: Source, strict, hdf5_mapping, step_events: int | None, opened):
    def open_batches():
        r = opened.take(src.path)
        if r is None:
            r = readers.open_reader(src.path, src.tree, strict, hdf5_mapping)
        try:
            per_event = r.bytes_per_event()
            pos = 0
            while pos < r.entries:
                # about READ_STEP_BYTES per read, re-measured on every batch
                step = max(1, int(READ_STEP_BYTES / per_event))
                if step_events:
                    step = min(step, step_events)
                stop = min(r.entries, pos + step)
                for batch in r.batches(pos, stop, stop - pos):
                    if batch.num_rows:
                        per_event = max(1.0, batch.nbytes / batch.num_rows)
                    yield batch
                pos = stop
        finally:
            r.close()
    return open_batches


def _commit(store, writer: _Writer, m: Manifest, expected_version):
    """Commit ``m``; discard the writer's partitions only when the commit definitely
    did not happen.

    ``mf.commit`` replaces the manifest (one guarded, atomic operation) and then
    updates the index.  Only a lost race (EEXIST / ECANCELED: the guard refused, nothing
    was applied) is definite.  Any other failure is ambiguous: a timed-out replace may
    have been applied by the OSD, and a failed index update comes after the manifest is
    already current.  Then the manifest is read again: if it is ours the operation
    succeeded (the index update is retried); if it cannot be told, the partitions are
    left for ``gc`` and the error says so.  Discarding there deleted committed data.
    """
    _fault("before-commit")
    try:
        mf.commit(store, m, expected_version, before_header=lambda: _fault("after-pieces"))
    except (DatasetExistsError, ConcurrentUpdateError, mf.NotCommittedError):
        writer.discard()   # definite: the loser's partitions are garbage
        raise
    except BaseException as e:
        committed = _is_committed(store, m)
        if committed is True:
            try:
                mf.update_index(store, m.dataset, m.version, mf.index_entry(m))
            except Exception as e2:  # noqa: BLE001 - the data is committed; say what lags
                warnings.warn(f"dataset {m.dataset!r} was committed as version {m.version}, but "
                              f"the dataset index could not be updated ({e2}); the dataset may "
                              f"be missing from listings until its next commit", stacklevel=3)
            _fault("after-commit")
            return
        if isinstance(e, Exception):
            raise ClusterError(
                f"the outcome of committing dataset {m.dataset!r} version {m.version} is "
                f"unknown ({type(e).__name__}: {e}; the manifest "
                f"{'could not be read again' if committed is None else 'is not ours now'}); its partitions were kept (if the "
                f"commit did not happen, `gc` removes them)") from e
        raise
    _fault("after-commit")


def _is_committed(store, m: Manifest):
    """True if ``m`` is the dataset's current manifest, False if another one is (or
    none), None if the manifest cannot be read."""
    try:
        cur = mf.load_manifest(store, m.dataset)
    except UnknownDatasetError:
        return False
    except Exception:  # noqa: BLE001 - unknown, the caller keeps the data
        return None
    return cur.version == m.version and [p.object for p in cur.partitions] == [p.object for p in m.partitions]


def _write_sources(store, dataset, schema, sources, first_index, encoding, target_bytes,
                   target_events, workers, progress, strict, hdf5_mapping, what, opened):
    with Progress(what, len(sources), sum(s.entries for s in sources),
                  enabled=progress) as prog:
        writer = _Writer(store, dataset, schema, encoding, target_bytes, target_events, workers, prog)
        jobs = [_Job(first_index + i, s.event_start, s.entries,
                     _source_batches(s, strict, hdf5_mapping, target_events, opened), s.path)
                for i, s in enumerate(sources) if s.entries]
        parts = writer.run(jobs)
    return writer, parts


def _check_common_schema(probed, expected: pa.Schema | None, dataset: str) -> pa.Schema:
    """Every file must have the same columns (of the dataset, else of the first file)."""
    where = f"dataset {dataset!r}"
    for src, schema in probed:
        if expected is None:
            expected, where = schema, src.path
        elif schema != expected:
            raise InputFileError(f"{src.path} does not have the columns of {where}: "
                                 f"{_schema_difference(expected, schema)}")
    return expected


# -- the operations -----------------------------------------------------------------------
def ingest(store, paths, dataset, tree=None, partition_events=None,
           partition_bytes=DEFAULT_PARTITION_BYTES, format="arrow", compression=None,
           workers=2, strict=False, progress=None, hdf5_mapping=None, metadata=None) -> Manifest:
    """Create ``dataset`` from ROOT/HDF5 files; returns the committed manifest (version 1).
    ``metadata``: catalogue metadata (catalogue/metadata.py); what the files' Runs and
    LuminosityBlocks trees tell (runs, lumi_blocks, sum_weights, gen_events) is added
    unless ``metadata`` sets the key."""
    mf.check_dataset_name(dataset)
    metadata = meta_mod.check(metadata or {})
    encoding = encoder.check_encoding(format, compression)
    partitioner.check_targets(partition_bytes, partition_events)
    if mf.current_version(store, dataset) is not None:
        raise DatasetExistsError(f"dataset {dataset!r} exists already: use append to add files, "
                                 "or delete it first")
    with _OpenReaders() as opened:
        probed = _probe_all(paths, tree, strict, hdf5_mapping, workers, opened)
        schema = _check_common_schema(probed, None, dataset)
        sources = _number_sources([s for s, _ in probed], 0)
        writer, parts = _write_sources(store, dataset, schema, sources, 0, encoding, partition_bytes,
                                       partition_events, workers, progress, strict, hdf5_mapping,
                                       f"ingest {dataset}", opened)
    try:
        auto = meta_mod.check(runs.from_files([s.path for s in sources]), "the files' run metadata")
    except meta_mod.MetadataError as e:
        warnings.warn(f"{e}; not recorded", readers.IngestWarning, stacklevel=2)
        auto = {}
    m = Manifest(dataset=dataset, version=1, schema=schema, partitions=parts, sources=sources,
                 encoding=encoding, previous_version=None, metadata={**auto, **metadata},
                 change=f"ingest {len(sources)} file(s)")
    _commit(store, writer, m, None)
    return m


def _number_sources(sources: list[Source], event_base: int) -> list[Source]:
    for s in sources:
        s.event_start = event_base
        event_base += s.entries
    return sources


def _layout_of_new_version(old: Manifest, format, compression, partition_bytes, partition_events):
    """Encoding and size target of a new version: what is asked, else what ``old`` has."""
    encoding = encoder.check_encoding(format or old.encoding["format"],
                                      compression if compression is not None else old.encoding["compression"])
    if partition_bytes is None and partition_events is None:
        partition_bytes = DEFAULT_PARTITION_BYTES
    partitioner.check_targets(partition_bytes, partition_events)
    return encoding, partition_bytes


def append(store, paths, dataset, tree=None, on_duplicate="skip", partition_events=None,
           partition_bytes=None, format=None, compression=None, workers=2, strict=False,
           progress=None, hdf5_mapping=None) -> Manifest:
    """Add files to ``dataset`` as a new version; a file already in it (same sha256) is
    skipped (``on_duplicate="skip"``) or refused (``"error"``)."""
    if on_duplicate not in ("skip", "error"):
        raise ValueError(f"on_duplicate must be 'skip' or 'error', not {on_duplicate!r}")
    old = mf.load_manifest(store, _writable(dataset, "append"))
    encoding, partition_bytes = _layout_of_new_version(old, format, compression, partition_bytes,
                                                       partition_events)
    if tree is None and old.num_sources:
        tree = old.first_tree()
    known = old.known_sources()
    with _OpenReaders() as opened:
        probed = _probe_all(paths, tree, strict, hdf5_mapping, workers, opened, known, on_duplicate)
        if not probed:   # nothing new; also repairs an index that a killed commit left behind
            mf.update_index(store, dataset, old.version, mf.index_entry(old))
            return old
        schema = _check_common_schema(probed, old.schema, dataset)
        sources = _number_sources([s for s, _ in probed], old.num_events)
        writer, parts = _write_sources(store, dataset, schema, sources, old.num_sources, encoding,
                                       partition_bytes, partition_events, workers, progress, strict,
                                       hdf5_mapping, f"append {dataset}", opened)
    if old.num_partitions and encoding != old.encoding:
        writer.discard()
        raise SkyhookError(f"dataset {dataset!r} is stored as {old.encoding}; append with the same "
                           "format and compression, or reshard it first")
    # the new version shares old's manifest pieces: only the new partitions are written
    m = mf.appended(old, parts, sources, encoding, schema,
                    metadata=_appended_metadata(old.metadata, sources),
                    change=f"append {len(sources)} file(s), +{sum(s.entries for s in sources):,} events")
    _commit(store, writer, m, old.version)
    return m


def _appended_metadata(old: dict, sources) -> dict:
    """The metadata after an append: the run keys that the dataset has and the new files
    carry too are combined (ranges merged, counts and sums added); the rest is kept."""
    new = runs.from_files([s.path for s in sources])
    out = dict(old)
    for k, v in new.items():
        if k in old:
            out[k] = runs.combine({k: old[k]}, {k: v})[k]
    try:
        return meta_mod.check(out)
    except meta_mod.MetadataError:
        return dict(old)


def set_metadata(store, dataset, set_=None, unset=()) -> Manifest:
    """Change ``dataset``'s metadata as a new version (the same partitions and pieces:
    only a header is written).  Returns the current manifest unchanged if nothing
    changes."""
    old = mf.load_manifest(store, _writable(dataset, "a metadata change"))
    new = meta_mod.updated(old.metadata, set_, unset)
    if new == old.metadata:
        return old
    m = mf.appended(old, [], [], old.encoding, metadata=new,
                    change="metadata " + meta_mod.changes(old.metadata, new))
    _commit(store, _NoPartitions(), m, old.version)   # the same recovery as any commit
    return m


class _NoPartitions:
    """The writer of a commit that wrote no partition (a metadata change)."""

    def discard(self):
        pass


def reshard(store, dataset, partition_events=None, partition_bytes=None, format=None,
            compression=None, workers=2, progress=None) -> Manifest:
    """Rewrite ``dataset`` into new partitions (size, format, compression) as a new version.
    The old version stays readable until the commit; ``gc`` then removes its partitions."""
    old = mf.load_manifest(store, _writable(dataset, "reshard"))
    encoding, partition_bytes = _layout_of_new_version(old, format, compression, partition_bytes,
                                                       partition_events)
    by_source: dict[int, list[Partition]] = {}
    for p in old.partitions:
        by_source.setdefault(p.source, []).append(p)

    def old_batches(plist):
        def open_batches():
            # one old partition in memory at a time
            for p in sorted(plist, key=lambda p: p.entry_start):
                data = store.read(p.object)
                checksum.verify(data, p.checksum, f"partition {p.object!r}")
                table = encoder.decode(data)
                yield from table.to_batches()
        return open_batches

    with Progress(f"reshard {dataset}", len(by_source), old.num_events, enabled=progress) as prog:
        writer = _Writer(store, dataset, old.schema, encoding, partition_bytes, partition_events,
                         workers, prog)
        jobs = []
        for i, src in enumerate(old.sources):
            if src.entries:
                plist = by_source.get(i, [])
                jobs.append(_Job(i, src.event_start, src.entries, old_batches(plist),
                                 f"source {src.name} of dataset {dataset!r}"))
        parts = writer.run(jobs)
    m = Manifest(dataset=dataset, version=old.version + 1, schema=old.schema, partitions=parts,
                 sources=old.sources, encoding=encoding, previous_version=old.version,
                 provenance=old.provenance, metadata=old.metadata,
                 change=f"reshard into {len(parts)} partitions ({encoding['format']}"
                        f"{', ' + encoding['compression'] if encoding['compression'] else ''})")
    _commit(store, writer, m, old.version)
    return m


def list_datasets(store) -> list[str]:
    return mf.list_datasets(store)


def delete(store, dataset) -> list[str]:
    """Remove ``dataset``: its manifest first (so readers stop seeing it), then its index
    entry, then, once no reader trusts the manifest any more, its partitions.  Returns
    the removed partition objects."""
    mf.check_dataset_name(dataset)
    exists = mf.current_version(store, dataset) is not None
    parts = _dataset_partitions(store, dataset)
    if not exists and not parts and dataset not in mf.list_datasets(store):
        raise UnknownDatasetError(dataset, mf.list_datasets(store))
    store.remove(mf.manifest_object(dataset))
    mf.update_index(store, dataset, None)
    mf.wait_out_trust()
    for obj in parts:
        store.remove(obj)
    for obj in _dataset_pieces(store, dataset):
        store.remove(obj)
    for obj in _version_copies(store, dataset).values():
        store.remove(obj)
    return parts


# when a partition was written (seconds since the epoch): gc's grace period.  Not the
# object's mtime: python-rados 16.2.15's Ioctx.stat answers the epoch for it.
WRITTEN_XATTR = "skyhook.written"


class GcResult(list):
    """The partition objects gc removed (a list, as before), plus ``versions``: the
    versions whose header copies it collected, and ``kept``: the versions kept."""

    versions: list
    kept: list


def gc(store, dataset, grace: float = defaults.GC_GRACE, keep_versions: int = 1,
       keep_days: float | None = None) -> GcResult:
    """Collect old versions of ``dataset`` by the retention policy (the ``keep_versions``
    newest, and with ``keep_days`` every version that was current in the last
    ``keep_days`` days; storage/versions.py), then remove the partition objects and
    manifest pieces that no kept version names (left by killed or failed operations,
    or superseded by append/reshard and no longer kept) and that were last written at
    least ``grace`` seconds ago: a writer running concurrently has not named its
    partitions yet (its commit comes last), and gc deleted them before.

    The default keeps the current version only (what gc always did).  Copies are
    removed oldest first, so a killed gc leaves the kept versions a contiguous run.  A
    dataset that was never committed (a killed ingest or skim) has no manifest: all its
    partitions and pieces are unnamed then."""
    try:
        cur = mf.load_manifest(store, _writable(dataset, "gc"))
    except UnknownDatasetError:
        # never committed (a killed ingest or skim): all its partitions and pieces are unnamed
        mf.check_dataset_name(dataset)
        if not _dataset_partitions(store, dataset) and not _dataset_pieces(store, dataset):
            raise
        return _remove_unnamed(store, dataset, set(), set(), grace, [], [])
    # a reader may still trust the version before ``cur`` (committed just now, by
    # another process): nothing it names goes before that trust is out
    mf.wait_out_trust()
    copies = _version_copies(store, dataset)
    kept = versions_mod.kept_versions(store, dataset, cur.version)
    loaded = {cur.version: cur}
    for v in kept:
        if v not in loaded:
            loaded[v] = mf.load_manifest(store, dataset, version=v)
    collect = versions_mod.to_collect([(v, loaded[v].created) for v in kept],
                                      keep_versions=keep_versions, keep_days=keep_days)
    keep = [v for v in kept if v not in collect]
    # copies below the kept run (collected ones, and strays a killed gc left) go too;
    # the current version's copy (left by a commit that lost its race) stays
    stale = sorted(v for v in copies if v < min(keep))
    for v in stale:
        store.remove(copies[v])
    named: set[str] = set()
    kept_pieces: set[str] = set()
    for v in keep:
        m = loaded[v]
        named.update(m.partition_table()["object"].tolist())
        if m.pieces is not None:
            kept_pieces |= m.pieces.objects()
    return _remove_unnamed(store, dataset, named, kept_pieces, grace, stale, keep)


def _remove_unnamed(store, dataset, named: set, kept_pieces: set, grace: float, versions, kept) -> GcResult:
    now = time.time()
    removed = GcResult()
    removed.versions, removed.kept = versions, kept
    for obj in _dataset_partitions(store, dataset):
        if obj in named:
            continue
        if grace > 0:
            try:
                if now - float(store.get_xattr(obj, WRITTEN_XATTR)) < grace:
                    continue
            except FileNotFoundError:
                continue
            except (SkyhookError, ValueError):
                pass   # written before the xattr existed, or unreadable: old
        removed.append(obj)
    # manifest pieces no kept version names (superseded by a merge or a reshard, or
    # written by a killed commit); the pieces kept versions share are named and stay
    for obj in list(removed) + [o for o in _dataset_pieces(store, dataset) if o not in kept_pieces]:
        store.remove(obj)
    return removed


def describe(store, dataset) -> dict:
    m = mf.load_manifest(store, dataset)
    types = m.column_types()
    columns = []
    for f in m.schema:
        # one statistics column at a time, vectorised (never every partition's dicts)
        lo = hi = None
        s = m.column_stats(f.name)
        if s is not None and s.shape[1] and not np.isnan(s[0]).all():
            lo, hi = float(np.nanmin(s[0])), float(np.nanmax(s[1]))
            if types[f.name].kind != "float":
                lo, hi = int(lo), int(hi)
                if types[f.name].kind == "bool":
                    lo, hi = bool(lo), bool(hi)
        columns.append({"name": f.name, "arrow_type": str(f.type), "kind": types[f.name].kind,
                        "list": types[f.name].is_list, "min": lo, "max": hi})
    sizes = m.partition_table()["bytes"].tolist()
    return {
        "dataset": m.dataset, "version": m.version, "created": m.created,
        "previous_version": m.previous_version, "encoding": m.encoding,
        "metadata": dict(m.metadata), "change": m.change,
        "versions": [dataclasses.asdict(v) for v in versions_mod.history(store, m.dataset)],
        "num_events": m.num_events, "num_partitions": m.num_partitions,
        "bytes": sum(sizes),
        "partition_bytes": {"min": min(sizes, default=0), "max": max(sizes, default=0)},
        "columns": columns,
        "sources": [dataclasses.asdict(s) for s in m.sources],
        **({"provenance": m.provenance} if m.provenance is not None else {}),
    }


def render_description(d: dict, max_columns: int = 40) -> str:
    lines = [
        f"dataset {d['dataset']}  version {d['version']}  created {d['created']}",
        f"  {d['num_events']:,} events in {d['num_partitions']} partitions, "
        f"{d['bytes'] / 1e6:.2f} MB ({d['encoding']['format']}"
        f"{', ' + d['encoding']['compression'] if d['encoding']['compression'] else ''}); "
        f"partitions {d['partition_bytes']['min'] / 1e6:.2f}..{d['partition_bytes']['max'] / 1e6:.2f} MB",
    ]
    lines += history_lines(d)
    lines.append(f"  sources ({len(d['sources'])}):")
    for s in d["sources"]:
        lines.append(f"    {s['name']}  tree {s['tree']}  {s['entries']:,} entries  "
                     f"{s['size'] / 1e6:.2f} MB  sha256 {s['sha256'][:12]}")
    lines.append(f"  columns ({len(d['columns'])}):")
    for c in d["columns"][:max_columns]:
        rng = f"  [{c['min']}, {c['max']}]" if c["min"] is not None else ""
        lines.append(f"    {c['name']:<28} {c['arrow_type']}{rng}")
    if len(d["columns"]) > max_columns:
        lines.append(f"    ... and {len(d['columns']) - max_columns} more (--json lists all)")
    return "\n".join(lines)
