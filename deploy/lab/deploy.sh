#!/bin/bash
# Deploy Ceph on the lab hosts with upstream ceph-ansible stable-6.0 (Debian's pacific packages).
# 1) site.yml on the mon/mgr host  2) raw-osds.yml (ceph-volume raw)  3) site.yml on everything.
set -euo pipefail
R=$(cd "$(dirname "$0")" && pwd); . $R/lab.env; . $R/ansible.env
mkdir -p $LAB/run; cd $LAB/ca6
[ -f site.yml ] || cp site.yml.sample site.yml
t0=$(date +%s); step() { echo "== $(( $(date +%s) - t0 ))s: $*"; }
step "site.yml, mons+mgrs";  ansible-playbook -i $INV/hosts-monmgr.ini site.yml -e @$R/extra-vars.yml > $LAB/run/deploy-1.log 2>&1 || { tail -40 $LAB/run/deploy-1.log; exit 1; }
step "raw-osds.yml";         ansible-playbook -i $INV/hosts.ini $R/raw-osds.yml -e @$R/extra-vars.yml > $LAB/run/deploy-2.log 2>&1 || { tail -40 $LAB/run/deploy-2.log; exit 1; }
step "site.yml, all hosts";  ansible-playbook -i $INV/hosts.ini site.yml -e @$R/extra-vars.yml > $LAB/run/deploy-3.log 2>&1 || { tail -40 $LAB/run/deploy-3.log; exit 1; }
step "done"; docker exec cl-node1 ceph -s
