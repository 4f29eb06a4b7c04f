"""Where things live: the local cluster's folder, its ceph.conf, our class build.

Only path resolution; nothing here starts, reads or talks to a cluster.

The Ceph config a command uses is, in this order: an explicit ``--conf``,
``$SKYHOOK_CEPH_CONF``, then the ceph.conf of the default local cluster
(``skyhook cluster up`` creates it).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_cluster_dir() -> Path:
    """The per-user folder of the local cluster: $SKYHOOK_CLUSTER_DIR, else
    $XDG_DATA_HOME/skyhook/cluster (default ~/.local/share/skyhook/cluster)."""
    explicit = os.environ.get("SKYHOOK_CLUSTER_DIR")
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "skyhook" / "cluster"


def default_conf() -> Path:
    """The ceph.conf of the default local cluster (may not exist yet)."""
    return default_cluster_dir() / "ceph.conf"


def resolve_conf(explicit: str | os.PathLike | None = None) -> Path:
    """The Ceph config to use: ``explicit``, else $SKYHOOK_CEPH_CONF, else default_conf()."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("SKYHOOK_CEPH_CONF")
    if env:
        return Path(env).expanduser()
    return default_conf()


def class_library() -> Path:
    """Our object class build: $SKYHOOK_CLASS_LIB, else <repo>/build/lib/libcls_skyhook.so."""
    explicit = os.environ.get("SKYHOOK_CLASS_LIB")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return REPO_ROOT / "build" / "lib" / "libcls_skyhook.so"


def shared_data_dir() -> Path:
    """The real test files, ../shared/data next to the repository (never copied in)."""
    return REPO_ROOT.parent / "shared" / "data"
