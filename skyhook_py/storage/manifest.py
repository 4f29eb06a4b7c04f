"""The dataset manifest: what a dataset is, as committed in the pool.

A manifest names the dataset's partitions (object, event range, bytes, statistics),
its Arrow schema, the provenance of every source file and the encoding.  It lives in
the object ``manifest.<dataset>`` (JSON data, omap key ``version``) and is replaced
in one guarded RADOS operation, so a reader sees the old version or the new one,
never a mix (formats/layout.md).  ``manifest._datasets`` lists the datasets.

This module reads, writes and commits manifests; it does not read partitions or
source files (skyhook_py.transcode does).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re

import pyarrow as pa

from ..errors import ConcurrentUpdateError, DatasetExistsError, SkyhookError, UnknownDatasetError
from ..query import ir

FORMAT = "skyhook-manifest"
FORMAT_VERSION = 1
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


@dataclasses.dataclass
class Manifest:
    dataset: str
    version: int
    schema: pa.Schema
    partitions: list[Partition]
    sources: list[Source]
    encoding: dict          # {"format": "arrow"|"parquet", "compression": None|"lz4"|"zstd"}
    created: str = ""
    previous_version: int | None = None

    @property
    def num_events(self) -> int:
        return sum(s.entries for s in self.sources)

    def column_types(self) -> dict[str, ir.ColumnType]:
        return {f.name: column_type(f.type, f.name) for f in self.schema}

    # -- JSON ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "dataset": self.dataset, "version": self.version,
            "created": self.created or _now(),
            "previous_version": self.previous_version,
            "encoding": dict(self.encoding),
            "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode("ascii"),
            "columns": {n: {"type": t.kind, "list": t.is_list} for n, t in self.column_types().items()},
            "num_events": self.num_events,
            "partitions": [_partition_dict(p) for p in self.partitions],
            "sources": [dataclasses.asdict(s) for s in self.sources],
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
            if d.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"manifest format_version {d.get('format_version')!r}, "
                                 f"this Skyhook reads {FORMAT_VERSION}")
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
            return cls(
                dataset=d["dataset"], version=int(d["version"]), schema=schema,
                partitions=[Partition(**p) for p in d["partitions"]],
                sources=[Source(**s) for s in d["sources"]],
                encoding=dict(d["encoding"]), created=d.get("created", ""),
                previous_version=d.get("previous_version"))
        except (ValueError, KeyError, TypeError) as e:
            raise SkyhookError(f"corrupt {where}: {e}") from e


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
    return ir.ColumnType(kind, is_list)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the pool ----------------------------------------------------------------------
def list_datasets(store) -> list[str]:
    """Names of the datasets in the pool (from the ``manifest._datasets`` index)."""
    try:
        return sorted(store.get_omap(INDEX_OBJECT))
    except FileNotFoundError:
        return []


def load_manifest(store, dataset: str) -> Manifest:
    """The current manifest of ``dataset``; UnknownDatasetError (with close matches) if none."""
    obj = manifest_object(dataset)
    try:
        # one read op (atomic, so never half of an old and half of a new manifest), no
        # stat first: a read longer than the object returns the object; only a manifest
        # that fills the buffer is read again with a larger one
        length = 1 << 20
        while True:
            data = store.read(obj, length=length)
            if len(data) < length:
                break
            length *= 4
    except FileNotFoundError:
        raise UnknownDatasetError(dataset, list_datasets(store)) from None
    return Manifest.from_json(data, where=f"manifest of dataset {dataset!r}")


def current_version(store, dataset: str) -> int | None:
    """The committed version of ``dataset`` (omap key), None if the dataset does not exist."""
    try:
        v = store.get_omap(manifest_object(dataset)).get(VERSION_KEY)
    except FileNotFoundError:
        return None
    return int(v) if v is not None else None


def commit(store, manifest: Manifest, expected_version: int | None) -> None:
    """Replace the dataset's manifest with ``manifest`` if its version is still
    ``expected_version`` (None: the dataset must not exist), then update the index.

    Losing the race raises ConcurrentUpdateError (DatasetExistsError for a creation
    that lost to another creator); nothing of the manifest was applied then.
    """
    if not manifest.created:
        manifest.created = _now()
    obj = manifest_object(manifest.dataset)
    expected = None if expected_version is None else str(expected_version)
    try:
        store.replace_guarded(obj, manifest.to_json(), VERSION_KEY, expected, str(manifest.version))
    except FileExistsError as e:
        raise DatasetExistsError(
            f"dataset {manifest.dataset!r} was created by another writer meanwhile") from e
    except InterruptedError as e:
        raise ConcurrentUpdateError(
            f"dataset {manifest.dataset!r} changed while this operation ran (expected version "
            f"{expected_version}); nothing was committed, retry the operation") from e
    update_index(store, manifest.dataset, manifest.version)


def update_index(store, dataset: str, version: int | None) -> None:
    """Record (or with None remove) ``dataset`` in the listing index."""
    if version is None:
        try:
            store.set_omap(INDEX_OBJECT, {}, remove_keys=(dataset,))
        except FileNotFoundError:
            pass
    else:
        store.set_omap(INDEX_OBJECT, {dataset: str(version).encode()})
