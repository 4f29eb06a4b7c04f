#!/bin/bash
# Creates (or shows) the two cephx users of Skyhook on a cluster, least privilege:
#
#   client.skyhook-query   reads partitions (part.*) and manifests (manifest*) of one pool
#                          and namespace, and calls only `skyhook scan` and `skyhook stats`
#                          on partitions; it cannot write, delete, list other objects or
#                          call any other class (it holds no `x` cap).
#   client.skyhook-ingest  reads and writes objects of that namespace; calls no class and
#                          cannot create snapshots: its grant matches the pool by the
#                          application tag `skyhook pool=POOL` (set here), because a grant
#                          that names the pool (`allow rw pool=POOL ...`) lets the key create
#                          self-managed snapshots, which switch the whole pool to
#                          unmanaged-snaps mode (`ceph osd pool mksnap` then fails).
#
#   deploy/create-keys.sh [POOL] [NAMESPACE] [OUTDIR]     (defaults: skyhook skyhook .)
#
# Run where `ceph` works as an admin (CEPH_ARGS="-c ... -k ..." for a non-default cluster).
# The caps are the ones skyhook_py/storage/caps.py spells (query_caps(),
# ingest_caps(), pool_tag()); keep the two in step.  A user that exists with older caps
# keeps them (get-or-create): `ceph auth caps client.skyhook-ingest mon 'allow r' osd ...`.
set -euo pipefail
POOL=${1:-skyhook}
NS=${2:-skyhook}
OUT=${3:-.}
WHERE="pool=$POOL namespace=$NS"

# `class skyhook` alone would also grant any write method of the class: name each method.
# `r` and `class ...` cannot share one grant, hence the separate grants.
QUERY_OSD="allow r $WHERE object_prefix part., \
allow $WHERE object_prefix part. class skyhook scan, \
allow $WHERE object_prefix part. class skyhook stats, \
allow r $WHERE object_prefix manifest"
INGEST_OSD="allow rw namespace=$NS tag skyhook pool=$POOL"

# the tag the ingest grant matches (`enable` is a no-op when skyhook is already enabled)
ceph osd pool application enable "$POOL" skyhook
ceph osd pool application set "$POOL" skyhook pool "$POOL"

ceph auth get-or-create client.skyhook-query mon 'allow r' osd "$QUERY_OSD" \
    -o "$OUT/ceph.client.skyhook-query.keyring"
ceph auth get-or-create client.skyhook-ingest mon 'allow r' osd "$INGEST_OSD" \
    -o "$OUT/ceph.client.skyhook-ingest.keyring"
chmod 600 "$OUT"/ceph.client.skyhook-*.keyring
echo "wrote $OUT/ceph.client.skyhook-query.keyring and $OUT/ceph.client.skyhook-ingest.keyring"
ceph auth get client.skyhook-query
ceph auth get client.skyhook-ingest
