#!/bin/bash
# skyhook/debian:bookworm (debootstrap, no registry) and the node image: systemd + sshd +
# the Ceph .debs cached, so ceph-ansible's apt tasks run fast.
set -euo pipefail
. "$(dirname "$0")/lab.env"
engine_base_image $BASE_IMG
mkdir -p $LAB/node && cp -r $LAB_SRC/node/. $LAB/node/ && cp $LAB/ssh/id_ed25519.pub $LAB/node/authorized_keys
sed -i "s#^FROM .*#FROM $BASE_IMG#" $LAB/node/Dockerfile
docker build -q --network host -t $IMG $LAB/node
