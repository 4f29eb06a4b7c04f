#!/bin/bash
# The whole lab, cold: host prerequisites -> ansible venv + ceph-ansible -> images -> 3
# container hosts -> ceph-ansible deploy (Ceph 16.2.15 from Debian, 1 mon, 1 mgr, 3 OSDs)
# with Skyhook's ceph_conf_overrides merged into group_vars/all.yml. Per-step times are
# printed. deploy/lab/lab-down.sh removes it and restores the host, also after a failure.
set -uo pipefail
R=$(cd "$(dirname "$0")" && pwd); . $R/lab.env
t0=$(date +%s); step() { echo "== +$(( $(date +%s) - t0 ))s $*"; }
step host-up;       $R/host-up.sh || exit 1
# leftovers of a run that was killed before its teardown: remove them first
docker ps -a --format '{{.Names}}' | grep -q '^cl-node' && { step "removing a previous lab"; $R/down.sh; }
step setup-tools;   $R/setup-tools.sh || exit 1
step build-images;  $R/build-images.sh || exit 1
step up;            $R/up.sh || exit 1
$LAB/venv/bin/python $R/merge-vars.py $INV/group_vars/all.yml $R/lab-vars.yml \
    $REPO/deploy/ceph-ansible/group_vars/all.yml.skyhook
step deploy;        $R/deploy.sh || exit 1
step "lab up"
