#!/bin/bash
# Remove the lab (containers, network, loop devices, OSD files) and restore the host
# (dockerd stopped, FORWARD policy, iptables, ip_forward, fs.aio-max-nr). RMI=1: images too.
R=$(cd "$(dirname "$0")" && pwd)
$R/down.sh
$R/host-down.sh
