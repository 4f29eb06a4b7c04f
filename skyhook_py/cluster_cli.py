"""The command line of the local cluster: ``skyhook cluster up|status|down|restart-osds``.

Only argument parsing and printing; everything else is ``cluster.Cluster``.
Run as ``python -m skyhook_py.cluster_cli up [--hosts 3 --link 1gbit]`` or through
``skyhook cluster ...`` (the main CLI registers ``add_cluster_commands``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import cluster, netns
from .cluster import Cluster, format_status
from .errors import ClusterError
from .paths import default_cluster_dir


def _link(value: str) -> str | None:
    try:
        netns.parse_rate(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return None if value == "none" else value



def _cmd_up(args) -> int:
    if args.hosts is None and (args.link is not None or args.osds_per_host is not None):
        raise SystemExit("error: --link and --osds-per-host need --hosts")
    c = Cluster(args.dir).up(osds=args.osds, hosts=args.hosts, osds_per_host=args.osds_per_host or 1,
                             link=args.link)
    if args.measure_link and c.network is not None:
        for h, name in enumerate(c.hosts):
            bps = netns.measure_rate(c.network, h, nbytes=128 * 1024 * 1024, python=sys.executable)
            print(f"link to {name}: {bps / 1e9:.2f} Gb/s measured (TCP, 128 MiB, client -> host)")
    print(format_status(c.status()))
    return 0


def _cmd_status(args) -> int:
    st = Cluster(args.dir).status()
    print(json.dumps(st, indent=1) if args.json else format_status(st))
    return 0 if st["mon"] == "up" and st["osds_up"] == st["osds_total"] > 0 else 3


def _cmd_down(args) -> int:
    c = Cluster(args.dir)
    c.purge() if args.purge else c.down()
    return 0


def _cmd_host(args) -> int:
    c = Cluster(args.dir)
    verb = args.cluster_command
    if verb == "set-link":
        c.set_link(args.rate)
    else:
        host = int(args.host) if args.host.isdigit() else args.host
        if verb == "heal-host":
            c.heal_host(host)
        else:
            getattr(c, verb.replace("-", "_"))(host, wait_down=args.wait)
    print(format_status(c.status()))
    return 0


def _cmd_restart_osds(args) -> int:
    c = Cluster(args.dir)
    c.restart_osds()
    print(format_status(c.status()))
    return 0


def add_cluster_commands(subparsers) -> argparse.ArgumentParser:
    """Register ``cluster up|status|down|restart-osds`` on an argparse subparsers object.

    Each leaf sets ``func(args) -> exit code``; the caller runs ``args.func(args)``.
    """
    p = subparsers.add_parser("cluster", help="a local throwaway Ceph cluster (on 127.0.0.1, or on "
                              "storage hosts that are network namespaces)",
                              description=cluster.__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cluster_command", required=True)

    def leaf(name, func, help):
        q = sub.add_parser(name, help=help)
        q.add_argument("--dir", default=None,
                       help=f"cluster folder (default {default_cluster_dir()}, or $SKYHOOK_CLUSTER_DIR)")
        q.set_defaults(func=func)
        return q

    q = leaf("up", _cmd_up, "create or start the cluster and wait until it serves requests")
    q.add_argument("--osds", type=int, default=1, help="number of OSDs on one loopback host (default 1)")
    q.add_argument("--hosts", type=int, default=None,
                   help="storage hosts as network namespaces (mon on the first; default: one host on 127.0.0.1)")
    q.add_argument("--osds-per-host", type=int, default=None, help="OSDs per host with --hosts (default 1)")
    q.add_argument("--link", default=None, type=_link,
                   help="shape every host's link both ways with tbf: 1gbit, 10gbit, ... or none "
                        "(default none; rate only: this kernel cannot emulate delay)")
    q.add_argument("--measure-link", action="store_true",
                   help="measure the achieved rate to every host once (TCP from the client)")
    q = leaf("status", _cmd_status, "show mon, OSDs, pool, class and paths (exit 3 if not up)")
    q.add_argument("--json", action="store_true", help="print the status as JSON")
    q = leaf("down", _cmd_down, "stop the daemons (data kept)")
    q.add_argument("--purge", action="store_true", help="also delete the cluster folder")
    leaf("restart-osds", _cmd_restart_osds, "restart the OSDs to load a new build of the class")
    for verb, help in (("kill-host", "SIGKILL every daemon of a storage host (a power cut)"),
                       ("stop-host", "SIGSTOP every daemon of a storage host (a hung machine)"),
                       ("partition-host", "take a storage host's link down (its daemons keep running)"),
                       ("heal-host", "undo kill/stop/partition of a storage host and wait for its OSDs"),
                       ("set-link", "reshape every link: 1gbit, 10gbit, ... or none")):
        q = leaf(verb, _cmd_host, help)
        if verb == "set-link":
            q.add_argument("rate", type=_link)
        else:
            q.add_argument("host", help="host name (host0, host1, ...) or index")
            q.add_argument("--wait", action="store_true", help="wait until the mon marks its OSDs down"
                           if verb != "heal-host" else "wait until its OSDs are up (default for heal-host)")
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["cluster"]:  # `python -m skyhook_py.cluster_cli up` means `cluster up`
        argv = ["cluster", *argv]
    parser = argparse.ArgumentParser(prog="python -m skyhook_py.cluster_cli")
    add_cluster_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.func(args)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
