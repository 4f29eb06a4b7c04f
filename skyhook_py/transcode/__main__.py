"""``python -m skyhook_py.transcode --conf CEPH_CONF --pool POOL <command> ...``: the dataset
commands without the rest of the CLI (used by the killed-ingest tests)."""

import argparse
import sys

from .. import defaults
from ..storage.rados_io import Store
from .cli import add_dataset_commands


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyhook_py.transcode")
    parser.add_argument("--conf", required=True, help="ceph.conf of the cluster")
    parser.add_argument("--pool", default=defaults.POOL)
    parser.add_argument("--namespace", default=defaults.NAMESPACE)
    parser.add_argument("--name", default="client.admin", help="cephx user")
    parser.add_argument("--keyring", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    add_dataset_commands(sub, lambda a: Store(a.conf, a.pool, a.namespace, name=a.name, keyring=a.keyring))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
