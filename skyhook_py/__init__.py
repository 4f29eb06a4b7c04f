"""Skyhook: storage-side compute for physics data.

``connect()`` opens a session on a Ceph cluster (in-process pushdown);
``Client(address)`` talks to a running coordinator over gRPC.
"""

from .errors import (  # noqa: F401
    ClusterError,
    QueryError,
    SkyhookError,
    UnknownColumnError,
    UnknownDatasetError,
    UnsupportedError,
)


def connect(conf=None, pool=None, **kwargs):
    """Open a session on the cluster of ``conf`` (default: $SKYHOOK_CEPH_CONF, else the
    local cluster started by ``skyhook cluster up``) and ``pool`` (default ``skyhook``)."""
    from .session import Session

    return Session.open(conf=conf, pool=pool, **kwargs)


def __getattr__(name):
    if name == "Client":
        from .service.client import Client

        return Client
    raise AttributeError(name)
