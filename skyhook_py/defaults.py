"""Skyhook's defaults, spelled once.

Every module that needs a default pool, namespace, reply limit, timeout or address
imports it from here.  Plain constants, no imports.
"""

from __future__ import annotations

import os

POOL = "skyhook"                 # RADOS pool of the datasets ($SKYHOOK_POOL overrides)
NAMESPACE = "skyhook"            # RADOS namespace inside the pool
CLASS_NAME = "skyhook"           # the object class (cls_plugins/skyhook)
OP_TIMEOUT = 30                  # seconds, for every OSD and mon operation
MAX_REPLY_BYTES = 64 << 20       # the largest answer of one partition (the class enforces it)
GRPC_MAX_MESSAGE_BYTES = 64 << 20
WHOLE_ANSWER_BYTES = 4 << 20     # the largest answer QueryWhole sends in one reply (Query streams any size)
LISTEN = "127.0.0.1:50051"       # the coordinator's address
QUERY_USER = "client.skyhook-query"  # the coordinator's cephx user (the read-only query key)
INGEST_USER = "client.skyhook-ingest"  # the cephx user that may write partitions and manifests
REPLY_COMPRESSION = "auto"       # the class's replies: ZSTD from an OSD whose link is slow
CACHE_BYTES = 256 << 20          # the coordinator's result cache
PARTITION_BYTES = 64 << 20       # ingest: target size of one partition
GC_GRACE = 900                   # seconds: gc keeps unnamed partitions younger than this
MANIFEST_TRUST = 0.02            # seconds a checked manifest version is served unchecked; every
                                 # commit and removal waits this long (storage/manifest.py)
MAX_QUERY_OUTPUTS = 10_000       # output columns (names + expressions) of one query
MAX_QUERY_AGGREGATIONS = 1_000   # aggregations of one query
MAX_QUERY_TEXT = 1 << 20         # characters of one cut or expression text


def pool(explicit: str | None = None) -> str:
    """The pool to use: ``explicit``, else $SKYHOOK_POOL, else POOL."""
    return explicit or os.environ.get("SKYHOOK_POOL", POOL)
