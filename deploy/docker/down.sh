#!/bin/bash
# Undo up.sh: containers, networks and volumes of the stack removed; the images too unless
# KEEP_IMAGES=1 (a warm second `up`); the dockerd up.sh started is stopped (unless
# KEEP_ENGINE=1), and the host's FORWARD policy, iptables rules and ip_forward put back.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../lib/engine.sh"
STATE=${SKYHOOK_DOCKER_STATE:-/var/tmp/skyhook-docker}
export COMPOSE_PROJECT_NAME=skyhook
if $DOCKER info >/dev/null 2>&1; then
    docker-compose -f "$HERE/docker-compose.yml" --profile bench --profile minio down -v --remove-orphans -t 60
    # one-off `run` containers of the bench service
    $DOCKER ps -aq --filter label=com.docker.compose.project=skyhook | xargs -r $DOCKER rm -f -v >/dev/null
    if [ "${KEEP_IMAGES:-0}" != 1 ]; then
        $DOCKER image rm -f skyhook/skyhook:local skyhook/debian:bookworm >/dev/null 2>&1
        $DOCKER image prune -f >/dev/null
        $DOCKER builder prune -af >/dev/null 2>&1
    fi
fi
[ "${KEEP_ENGINE:-0}" = 1 ] || engine_down "$STATE"
