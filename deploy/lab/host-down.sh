#!/bin/bash
# Undo host-up.sh: stop the dockerd it started, delete docker0, put back the FORWARD
# policy (ACCEPT on these machines), iptables rules and ip_forward.
. "$(dirname "$0")/lab.env"
engine_down "$STATE/engine"
rmdir "$STATE/engine" "$STATE" 2>/dev/null || true
