#!/bin/bash
# Roles of the Skyhook image:
#   ceph          a one-node cluster (1 mon, $SKYHOOK_OSDS OSDs, class loaded) in
#                 $SKYHOOK_CLUSTER_DIR; stopped cleanly on SIGTERM (docker stop)
#   serve         the gRPC coordinator on 0.0.0.0:50051, query key of that cluster
#   bench ARGS    python -m benchmarks.run ARGS
#   anything else is executed as given (e.g. `skyhook query ...`)
set -euo pipefail
role=${1:-ceph}
case "$role" in
    ceph)
        skyhook cluster up --osds "${SKYHOOK_OSDS:-1}" --dir "$SKYHOOK_CLUSTER_DIR"
        trap 'skyhook cluster down --dir "$SKYHOOK_CLUSTER_DIR"; exit 0' TERM INT
        # the daemons run in the background; keep the container's pid 1 alive
        tail -F "$SKYHOOK_CLUSTER_DIR/log/cluster.log" &
        wait $!
        ;;
    serve)
        for _ in $(seq 60); do
            skyhook cluster status --dir "$SKYHOOK_CLUSTER_DIR" >/dev/null 2>&1 && break
            sleep 2
        done
        exec skyhook --conf "$SKYHOOK_CEPH_CONF" serve --listen "${SKYHOOK_LISTEN:-0.0.0.0:50051}"
        ;;
    bench)
        shift
        exec python -m benchmarks.run "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
