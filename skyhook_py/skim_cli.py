"""The `skyhook skim`, `skyhook status` and `skyhook health` commands: argument parsing
and printing only.

``skim`` runs in this process (reading the pushed-down answers, writing the new
partitions) or, with ``--server``, in the coordinator (no event comes here);
``status`` asks a coordinator about a query or skim by its id; ``health`` asks it
whether it serves (exit 0) or cannot reach its cluster (exit 3), with its figures.
"""

from __future__ import annotations

import json
import sys

from . import server_args


def add_skim_commands(sub, session_of, event_range_type, expressions_of):
    s = sub.add_parser("skim", help="write the events of a dataset that pass a cut as a new dataset")
    s.add_argument("source", help="the dataset to skim")
    s.add_argument("--into", required=True, metavar="NEW", help="name of the new dataset")
    s.add_argument("--where", help="cut string, e.g. '(nMuon >= 1) & (Muon_pt[:, 0] > 25)'")
    s.add_argument("--columns", help="comma-separated source columns to keep (default: all); "
                                      "run, luminosityBlock and event are always kept when present")
    s.add_argument("--expr", action="append", default=[], metavar="NAME=EXPR",
                   help="a computed column to store, e.g. lead_mu_pt='Muon_pt[:, 0]'")
    s.add_argument("--language", default="cut", choices=["cut", "qastle", "uproot-raw"])
    s.add_argument("--events", type=event_range_type, help="event range START:STOP of the source")
    s.add_argument("--partition-events", type=int, help="events per partition of the skim")
    s.add_argument("--partition-mb", type=float, help="target MiB per partition (default 64)")
    s.add_argument("--format", choices=["arrow", "parquet"], help="default: the source's")
    s.add_argument("--compression", help="default: the source's (e.g. zstd, lz4, none)")
    s.add_argument("--pushdown", choices=["auto", "on", "off"], default="auto")
    server_args.add_server_arguments(s, "run the skim in the coordinator at this gRPC address")
    s.add_argument("--json", action="store_true", help="print the outcome as JSON")
    s.set_defaults(func=lambda a: cmd_skim(a, session_of, expressions_of))

    t = sub.add_parser("status", help="the status of a query or skim (by id) in a coordinator")
    t.add_argument("request_id")
    server_args.add_server_arguments(t, "the coordinator's gRPC address", required=True)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_status)

    h = sub.add_parser("health", help="whether a coordinator serves (exit 0) or not (exit 3), and its figures")
    server_args.add_server_arguments(h, "the coordinator's gRPC address", required=True, token=False)
    h.add_argument("--timeout", type=float, default=10, help="seconds to wait for the answer")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_health)


def _columns(text):
    if not text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def cmd_skim(args, session_of, expressions_of):
    partition_bytes = int(args.partition_mb * (1 << 20)) if args.partition_mb else None
    compression = args.compression
    kwargs = dict(where=args.where, columns=_columns(args.columns), expressions=expressions_of(args.expr),
                  language=args.language, event_range=args.events, pushdown=args.pushdown,
                  partition_bytes=partition_bytes, partition_events=args.partition_events,
                  format=args.format, compression=compression)
    if args.server:
        with server_args.client(args) as c:
            done = c.skim(args.source, args.into, progress=not args.json and sys.stderr.isatty(),
                          **{k: v for k, v in kwargs.items() if v is not None})
        out = done
    else:
        from .session import new_status

        with session_of(args) as s:
            status = new_status(args.source, kind="skim")
            m = s.skim(args.source, args.into, status=status, progress=None if not args.json else False,
                       **kwargs)
            out = {"dataset": m.dataset, "version": m.version, "num_events": m.num_events,
                   "num_partitions": m.num_partitions,
                   "bytes": int(sum(int(b) for b in m.partition_table()["bytes"])),
                   "provenance": m.provenance, "request_id": status.request_id,
                   "statement": status.statement()}
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        p = out["provenance"] or {}
        print(f"skim {out['dataset']!r} version {out['version']}: {out['num_events']:,} events in "
              f"{out['num_partitions']} partitions, {out['bytes'] / 1e6:.2f} MB "
              f"(from {p.get('source', {}).get('dataset')!r} v{p.get('source', {}).get('version')}, "
              f"{p.get('events_scanned', 0):,} events scanned); request {out['request_id']}")
    return 0


def cmd_status(args):
    with server_args.client(args) as c:
        d = c.status(args.request_id)
    if args.json:
        print(json.dumps(d, indent=1, default=str))
        return 0
    from .query.tracker import render

    print(render(d))
    return 0


def cmd_health(args):
    """Health needs no token (load balancers probe it).  With ``serve --processes N`` the
    figures are the sums over the processes that answered."""
    with server_args.client(args) as c:
        h = c.health(timeout=args.timeout)
    if args.json:
        print(json.dumps(h, indent=1))
    else:
        print(f"{h['status']}: {h['message']} ({h['processes_answered']} of {h['processes']} "
              f"process{'es' if h['processes'] > 1 else ''} answered)")
        print(f"  queries running {h['queries_running']}; result cache {h['cache_entries']} entries, "
              f"{h['cache_bytes'] / 1e6:.1f} MB, {h['cache_hits']} hits, {h['cache_misses']} misses")
    return 0 if h["status"] == "SERVING" else 3
