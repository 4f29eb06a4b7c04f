#!/bin/bash
# Create 3 systemd "hosts" (docker containers) on a private bridge, each with one loop device for its OSD.
set -euo pipefail
. "$(dirname "$0")/lab.env"
docker network inspect $NET >/dev/null 2>&1 || \
  docker network create --subnet $SUBNET --gateway $GW -o com.docker.network.bridge.name=$BRIDGE $NET >/dev/null
mkdir -p $STATE $INV/host_vars $INV/group_vars; : > $STATE/loops.txt
cp $LAB_SRC/inventory/*.ini $INV/
# ceph-osd's system_tuning.yml always sets fs.aio-max-nr=1048576 (global, not namespaced): remember the host value
[ -f $STATE/aio-max-nr.orig ] || sysctl -n fs.aio-max-nr > $STATE/aio-max-nr.orig
for n in $NODES; do
  f=$STATE/$n-osd.img
  [ -f $f ] || truncate -s $OSD_SIZE $f
  dev=$(losetup -j $f | cut -d: -f1); [ -n "$dev" ] || dev=$(losetup -f --show $f)
  echo "$n $dev" >> $STATE/loops.txt
  printf '# written by up.sh\nraw_osd_devices: [%s]\n' $dev > $INV/host_vars/$n.yml
  # systempaths=unconfined: /proc/sys writable (ceph-ansible's sysctl task fails on a read-only one)
  # no --privileged: this VM's root lacks CAP_SYS_RESOURCE, and runc fails with "unable to apply caps"
  docker run -d --name $n --hostname $n \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp:exec \
    --device $dev --network $NET --ip ${IP[$n]} $IMG >/dev/null
done
for n in $NODES; do   # wait for systemd + sshd
  for i in $(seq 60); do
    s=$(docker exec $n systemctl is-system-running 2>/dev/null || true)
    [ "$s" = running ] || [ "$s" = degraded ] && break; sleep 1
  done; echo "$n: $s ${IP[$n]} $(grep "^$n " $STATE/loops.txt | cut -d' ' -f2)"
done
