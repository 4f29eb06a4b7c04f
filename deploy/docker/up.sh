#!/bin/bash
# Bring up the Docker stack from nothing: the engine (Debian's docker.io, dockerd started by
# hand with --iptables=false --bridge=none: every service uses the host's network, so the
# host's iptables are never touched), the debootstrap base image, the Skyhook image, then
# `docker-compose up` and a wait until ceph, seaweedfs and the coordinator answer.
# Idempotent.  deploy/docker/down.sh undoes all of it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib/engine.sh"
STATE=${SKYHOOK_DOCKER_STATE:-/var/tmp/skyhook-docker}
export COMPOSE_PROJECT_NAME=skyhook
COMPOSE=(docker-compose -f "$HERE/docker-compose.yml")
t0=$(date +%s)
engine_up "$STATE" --iptables=false --ip-forward=false --bridge=none
engine_base_image skyhook/debian:bookworm
t1=$(date +%s); echo "[up] engine and base image: $((t1 - t0)) s"
DOCKER_HOST=unix:///var/run/docker.sock "${COMPOSE[@]}" build ceph
t2=$(date +%s); echo "[up] image build: $((t2 - t1)) s"
"${COMPOSE[@]}" up -d ceph seaweedfs coordinator
port=${SKYHOOK_COORDINATOR_PORT:-18051}
for _ in $(seq 180); do
    h_ceph=$($DOCKER inspect -f '{{.State.Health.Status}}' skyhook_ceph_1 2>/dev/null || echo none)
    h_sw=$($DOCKER inspect -f '{{.State.Health.Status}}' skyhook_seaweedfs_1 2>/dev/null || echo none)
    if [ "$h_ceph" = healthy ] && [ "$h_sw" = healthy ] && (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        t3=$(date +%s); echo "[up] stack healthy: $((t3 - t2)) s (total $((t3 - t0)) s)"
        exit 0
    fi
    [ "$h_ceph" = unhealthy ] && break
    sleep 2
done
echo "[up] the stack did not become healthy (ceph: $h_ceph, seaweedfs: $h_sw); logs:"
"${COMPOSE[@]}" logs --tail 40
exit 1
