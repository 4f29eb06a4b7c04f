#!/usr/bin/env python3
"""Does every OSD of a pool answer the skyhook class?  Exit 0 if yes.

Calls skyhook.stats on a missing partition in each PG's primary: -ENOENT means the
class ran (loaded), -EOPNOTSUPP (95) means the OSD has not loaded it (copy the
library, restart the OSD).  Needs python3-rados; an ops script, not part of skyhook_py.

  deploy/check-class.py [--conf /etc/ceph/ceph.conf] [--pool skyhook] [--namespace skyhook]
"""
import argparse
import sys

import rados

p = argparse.ArgumentParser()
p.add_argument("--conf", default="/etc/ceph/ceph.conf")
p.add_argument("--pool", default="skyhook")
p.add_argument("--namespace", default="skyhook")
p.add_argument("--probes", type=int, default=64, help="objects probed (spread over PGs)")
a = p.parse_args()

cluster = rados.Rados(conffile=a.conf, conf={"rados_osd_op_timeout": "10",
                                              "rados_mon_op_timeout": "10",
                                              "client_mount_timeout": "10"})
cluster.connect()
io = cluster.open_ioctx(a.pool)
io.set_namespace(a.namespace)
bad = 0
for i in range(a.probes):
    obj = f"part.__skyhook_probe__.{i}"
    try:
        io.execute(obj, "skyhook", "stats", b"", length=4096)
    except rados.ObjectNotFound:
        continue  # the class ran and found no object: loaded
    except rados.Error as e:
        bad += 1
        print(f"{obj}: {e}", file=sys.stderr)
cluster.shutdown()
print("skyhook class answers on every probed PG" if not bad else f"{bad} of {a.probes} probes failed")
sys.exit(1 if bad else 0)
