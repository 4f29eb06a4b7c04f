"""The cephx capabilities of Skyhook's two keys, spelled once.

The query key reads partitions and manifests and calls the two read-only methods of
the class; the ingest key reads and writes the namespace, calls no class and cannot
create snapshots (see ``ingest_caps``).  Used by
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


# The pool's application tag that the ingest key's grant matches (``pool_tag``): set on
# the pool by whoever creates it (skyhook_py.cluster, deploy/create-keys.sh), e.g.
# `ceph osd pool application set P skyhook pool P`.
APPLICATION = "skyhook"
TAG_KEY = "pool"


def pool_tag(pool: str = POOL) -> tuple[str, str, str]:
    """(application, key, value) of the tag that ``ingest_caps(pool)`` grants writes in."""
    return APPLICATION, TAG_KEY, pool


def ingest_caps(pool: str = POOL, namespace: str = NAMESPACE) -> dict[str, str]:
    """The ingest path: read and write objects of the namespace, no class calls, no
    snapshots.

    The pool is matched by its application tag (``pool_tag``), not by ``pool=P``: the
    monitor lets any key whose OSD grant has `w` and names the pool (or no pool at all,
    `allow rw`) create self-managed snapshots in it (OSDMonitor's
    is_unmanaged_snap_op_permitted; the namespace and object_prefix of the grant do not
    count).  One such snapshot switches the whole pool to unmanaged-snaps mode for good,
    after which an admin's `ceph osd pool mksnap` fails (EINVAL).  A grant that matches
    the pool by tag writes the same objects but is never "writable" for that check, so
    the key's snapshot attempts get EPERM (tests/test_cluster.py asserts both).
    """
    app, key, value = pool_tag(pool)
    return {"mon": "allow r", "osd": f"allow rw namespace={namespace} tag {app} {key}={value}"}
