"""The cephx capabilities of Skyhook's two keys, spelled once.

The query key reads partitions and manifests and calls the two read-only methods of
the class; the ingest key reads and writes the namespace and calls no class.  Used by
the local cluster (``skyhook_py.cluster``); deploy/create-keys.sh and the Ansible
playbook grant the same strings.  Pure functions: nothing here talks to Ceph.
"""

from __future__ import annotations

from ..defaults import CLASS_NAME, NAMESPACE, POOL


def query_caps(pool: str = POOL, namespace: str = NAMESPACE) -> dict[str, str]:
    """Least privilege for the query path: read partitions and manifests, call the
    two read-only methods of our class on partitions, nothing else.

    `class skyhook` alone would also allow any write method of the class, so each
    method is named; `r` and `class` cannot share one grant (FACTS.md).
    """
    where = f"pool={pool} namespace={namespace}"
    return {
        "mon": "allow r",
        "osd": ", ".join([
            f"allow r {where} object_prefix part.",
            f"allow {where} object_prefix part. class {CLASS_NAME} scan",
            f"allow {where} object_prefix part. class {CLASS_NAME} stats",
            f"allow r {where} object_prefix manifest",
        ]),
    }


def ingest_caps(pool: str = POOL, namespace: str = NAMESPACE) -> dict[str, str]:
    """The ingest path: read and write objects of the namespace, no class calls."""
    return {"mon": "allow r", "osd": f"allow rw pool={pool} namespace={namespace}"}
