#!/bin/bash
# Roles of the Skyhook image (every service runs with network_mode host, on 127.0.0.1):
#   ceph        a one-node cluster (1 mon, $SKYHOOK_OSDS OSDs, class loaded) in
#               $SKYHOOK_CLUSTER_DIR, plus radosgw on $SKYHOOK_RGW_PORT with the S3 user
#               $SKYHOOK_S3_KEY/$SKYHOOK_S3_SECRET; all stopped cleanly on SIGTERM
#   serve       the gRPC coordinator on $SKYHOOK_LISTEN with the query key, a token from
#               $SKYHOOK_TOKEN (if set)
#   seaweedfs   SeaweedFS (master, volume, filer, S3 on $SKYHOOK_SEAWEEDFS_PORT), the same keys
#   bench ARGS  python -m benchmarks.run ARGS
#   anything else is executed as given (e.g. `skyhook query ...`)
set -euo pipefail
role=${1:-ceph}
case "$role" in
    ceph)
        exec python /opt/skyhook/deploy/docker/ceph_node.py
        ;;
    serve)
        for _ in $(seq 120); do
            [ -f "$SKYHOOK_CLUSTER_DIR/ready" ] && break
            sleep 1
        done
        args=(--listen "${SKYHOOK_LISTEN:-127.0.0.1:18051}")
        if [ -n "${SKYHOOK_TOKEN:-}" ]; then
            umask 077; echo "$SKYHOOK_TOKEN" > /run/skyhook-tokens; args+=(--token-file /run/skyhook-tokens)
        fi
        exec skyhook --conf "$SKYHOOK_CEPH_CONF" serve "${args[@]}"
        ;;
    seaweedfs)
        shift
        exec python -m benchmarks.seaweedfs --dir /var/lib/seaweedfs \
            --port "${SKYHOOK_SEAWEEDFS_PORT:-18333}" \
            --access-key "${SKYHOOK_S3_KEY:-skyhook-bench}" --secret-key "${SKYHOOK_S3_SECRET:-skyhook-bench-secret}" "$@"
        ;;
    bench)
        shift
        exec python -m benchmarks.run "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
