#!/bin/bash
# Remove the lab: containers, network, loop devices, OSD backing files. Leaves images unless RMI=1.
. "$(dirname "$0")/lab.env"
for n in $NODES; do docker rm -f -v $n >/dev/null 2>&1 || true; done
docker network rm $NET >/dev/null 2>&1 || true
for n in $NODES; do f=$STATE/$n-osd.img
  for d in $(losetup -j $f 2>/dev/null | cut -d: -f1); do losetup -d $d; done; rm -f $f; done
[ -f $STATE/aio-max-nr.orig ] && sysctl -q -w fs.aio-max-nr=$(cat $STATE/aio-max-nr.orig) && rm -f $STATE/aio-max-nr.orig
rm -f $STATE/loops.txt; rmdir $STATE 2>/dev/null || true
[ "${RMI:-0}" = 1 ] && docker rmi $IMG $BASE_IMG >/dev/null 2>&1 || true
rm -rf $LAB/run/facts $LAB/run/cp
echo "down: $(docker ps -a --format '{{.Names}}' | grep -c '^cl-node' || true) lab containers left; loops: $(losetup -a | grep -c skyhook-lab || true)"
