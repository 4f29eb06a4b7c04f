#!/bin/bash
# Host prerequisites: docker.io + debootstrap, dockerd started by hand with iptables on (the
# lab's bridge needs NAT to the Debian mirror), the host's FORWARD policy, rules and
# ip_forward recorded for host-down.sh. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lab.env"
engine_up "$STATE/engine"
