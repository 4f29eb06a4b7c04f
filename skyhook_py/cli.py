"""The `skyhook` command line: argument parsing and printing only.

Each subcommand calls the Python API (Session, transcode, cluster, the gRPC
client); errors a user can cause are printed as one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

from . import server_args


def main(argv=None) -> int:
    import logging

    # progress lines of long operations (cluster up, ingest) go to stderr
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    for a in (sys.argv[1:] if argv is None else argv):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:   # a non-UTF-8 byte, kept by Python as a surrogate
            shown = a.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            print(f"skyhook: error: the argument {shown!r} is not valid UTF-8", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .errors import SkyhookError

    try:
        return args.func(args) or 0
    except SkyhookError as e:
        print(f"skyhook: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, SystemExit2) as e:
        print(f"skyhook: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # writing --output, reading an input: the system's own message
        print(f"skyhook: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("skyhook: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skyhook", description="Storage-side compute for physics data on Ceph.")
    p.add_argument("--conf", help="ceph.conf of the cluster (default: $SKYHOOK_CEPH_CONF, else the local cluster)")
    p.add_argument("--pool", default=None, help="RADOS pool (default: $SKYHOOK_POOL or 'skyhook')")
    p.add_argument("--user", default="client.admin", help="cephx user (default client.admin)")
    p.add_argument("--keyring", default=None, help="keyring of --user")
    sub = p.add_subparsers(metavar="COMMAND")

    from . import cluster_cli

    cluster_cli.add_cluster_commands(sub)
    from . import transcode

    transcode.add_dataset_commands(sub, _store)
    from . import skim_cli

    skim_cli.add_skim_commands(sub, _session, _event_range, _expressions)

    q = sub.add_parser("query", help="run a query on a dataset")
    q.add_argument("dataset")
    q.add_argument("--columns", help="comma-separated columns or expressions (default: all); commas inside "
                                      "brackets and calls do not split, e.g. 'run,Muon_pt[:,0],hypot(MET_pt, 1)'")
    q.add_argument("--expr", action="append", default=[], metavar="NAME=EXPR",
                   help="a computed output column, e.g. good_mu_pt='Muon_pt[Muon_pt > 20]'")
    q.add_argument("--where", help="cut string, e.g. '(nMuon >= 2) & (MET_pt > 40)'")
    q.add_argument("--language", default="cut", choices=["cut", "qastle", "uproot-raw"],
                   help="language of --where (qastle and uproot-raw carry their own columns)")
    q.add_argument("--events", type=_event_range, help="event range START:STOP (dataset-wide numbering)")
    q.add_argument("--limit", type=_limit)
    q.add_argument("--hist", action="append", default=[], metavar="[NAME=]EXPR:BINS:LOW:HIGH",
                   help="push down a 1-D histogram instead of returning rows (repeatable; NAME defaults to "
                        "EXPR, or to the whole spec when two histograms share EXPR)")
    q.add_argument("--output", "-o", help="write the result as it arrives: rows to .parquet, .arrow (Arrow IPC), .csv or .jsonl; "
                                          "histograms to .json or .root (hist/uproot-readable)")
    q.add_argument("--show", type=int, default=0, metavar="N", help="print the first N rows as a table")
    q.add_argument("--no-pushdown", action="store_true", help="read the objects and evaluate on the client")
    q.add_argument("--pushdown", choices=["auto", "on", "off"], default="auto")
    server_args.add_server_arguments(q, "run through a coordinator at this gRPC address")
    q.add_argument("--compression", choices=["lz4", "zstd", "auto"],
                   help="with --server: the coordinator compresses the answer's Arrow data with this codec "
                        "(for a slow link to it; costs the coordinator CPU); auto: ZSTD once answers are "
                        "seen arriving slower than 150 MB/s")
    _add_reply_compression(q)
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_query)

    d = sub.add_parser("demo", help="start the local cluster, ingest demo data, answer a pushdown query")
    d.add_argument("--events", type=int, default=200_000)
    d.add_argument("--osds", type=int, default=1)
    d.set_defaults(func=cmd_demo)

    g = sub.add_parser("generate", help="write a NanoAOD-like demo ROOT file")
    g.add_argument("path")
    g.add_argument("--events", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--extra-columns", type=int, default=0, help="a wide tail of scalar branches")
    g.set_defaults(func=cmd_generate)

    _add_serve_command(sub)
    _add_servicex_command(sub)
    return p


def _add_servicex_command(subparsers):
    p = subparsers.add_parser("servicex", help="serve the ServiceX REST API (the servicex client's deliver())")
    p.add_argument("--listen", default="127.0.0.1:5000", help="host:port (default 127.0.0.1:5000)")
    p.add_argument("--s3-endpoint", required=True, help="S3 service for the result files, e.g. http://127.0.0.1:7480")
    p.add_argument("--s3-access-key", default=os.environ.get("SKYHOOK_S3_ACCESS_KEY"))
    p.add_argument("--s3-secret-key", default=os.environ.get("SKYHOOK_S3_SECRET_KEY"))
    p.add_argument("--token-file", help="refresh tokens (servicex.yaml's token:), one a line; without it no "
                   "token is required")
    p.add_argument("--partitions-per-file", type=int, default=1,
                   help="Skyhook partitions per result file (default 1)")
    p.set_defaults(func=cmd_servicex)


def cmd_servicex(args):
    from .service.servicex import ServiceXFrontend, serve
    from .errors import SkyhookError
    from .service.coordinator import read_token_file

    tokens = read_token_file(args.token_file) if args.token_file else None
    if args.token_file and not tokens:
        raise SkyhookError(f"token file {args.token_file!r} holds no token")
    with _session(args) as s:
        front = ServiceXFrontend(s, args.s3_endpoint, args.s3_access_key, args.s3_secret_key,
                                 refresh_tokens=tokens, partitions_per_file=args.partitions_per_file)
        running = serve(front, args.listen)
        print(f"skyhook ServiceX front end on {running.url}; results to {args.s3_endpoint}; "
              f"{'tokens required' if tokens else 'no authentication'}", file=sys.stderr, flush=True)
        try:
            running.thread.join()
        except KeyboardInterrupt:
            running.stop()
    return 0


def _add_serve_command(subparsers):
    from . import defaults

    p = subparsers.add_parser("serve", help="run the gRPC query coordinator")
    p.add_argument("--listen", default=defaults.LISTEN,
                   help=f"host:port (default {defaults.LISTEN}; port 0 picks one)")
    p.add_argument("--token-file", help="bearer tokens, one a line; without it no token is required")
    p.add_argument("--tls-cert", help="PEM certificate chain (with --tls-key: serve TLS only)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--as-user", dest="serve_user", default=defaults.QUERY_USER,
                   help=f"cephx user of the coordinator (default {defaults.QUERY_USER}, the read-only query key)")
    p.add_argument("--as-keyring", dest="serve_keyring", default=None,
                   help="keyring of --as-user (default: as ceph.conf says)")
    p.add_argument("--ingest-keyring", dest="writer_keyring", default=None,
                   help="keyring of a writer identity (the ingest key): lets the coordinator write skims; "
                        "without it (or --ingest-user) skims are refused")
    p.add_argument("--ingest-user", dest="writer_user", default=None,
                   help=f"cephx user of the writer identity (default {defaults.INGEST_USER})")
    p.add_argument("--cache-mb", type=int, default=defaults.CACHE_BYTES >> 20, help="result cache size")
    p.add_argument("--workers", type=int, default=64, help="concurrent RPCs served (per process)")
    p.add_argument("--processes", type=int, default=1,
                   help="coordinator processes sharing the port (each a whole coordinator with its own "
                        "cache; one uses one CPU core for its Python): see skyhook_py/service/processes.py")
    _add_reply_compression(p)
    p.set_defaults(func=cmd_serve)


def _add_reply_compression(p):
    from . import defaults
    from .query.reply_compression import MODES

    p.add_argument("--reply-compression", choices=MODES, default=defaults.REPLY_COMPRESSION,
                   help="how the OSDs compress their answers: auto (default) uses ZSTD from an OSD whose "
                        "answers arrive slower than 150 MB/s (a slow link); none, lz4, zstd: always that")


def cmd_serve(args):
    from . import defaults
    from .errors import SkyhookError
    from .service import coordinator
    from .service.server import serve

    tokens = coordinator.read_token_file(args.token_file) if args.token_file else None
    if args.token_file and not tokens:
        raise SkyhookError(f"token file {args.token_file!r} holds no token")

    kw = dict(conf=args.conf, pool=args.pool, user=args.serve_user, keyring=args.serve_keyring, tokens=tokens,
              tls_cert=args.tls_cert, tls_key=args.tls_key, cache_bytes=args.cache_mb << 20,
              max_workers=args.workers, writer_user=args.writer_user, writer_keyring=args.writer_keyring,
              reply_compression=args.reply_compression)
    skims = "written as " + (args.writer_user or defaults.INGEST_USER) if (args.writer_user or args.writer_keyring) \
        else "refused (no --ingest-keyring)"
    if args.processes > 1:
        from .service.processes import serve_processes

        running = serve_processes(args.processes, args.listen, **kw)
        where = f"{args.processes} processes on {running.address}"
    else:
        running = serve(args.listen, block=False, **kw)
        where = running.address
    print(f"skyhook coordinator on {where} as {args.serve_user}, pool "
          f"{defaults.pool(args.pool)}; TLS {'on' if args.tls_cert else 'off'}; "
          f"{'bearer tokens required' if tokens else 'no authentication'}; skims {skims}",
          file=sys.stderr, flush=True)
    return running.serve_until_signalled() or 0


def _session(args):
    from . import defaults
    from .session import Session

    return Session.open(conf=args.conf, pool=args.pool, user=args.user, keyring=args.keyring,
                        reply_compression=getattr(args, "reply_compression", defaults.REPLY_COMPRESSION))


def _store(args):
    return _session(args).store


INT64_MAX = (1 << 63) - 1


def _count(text, what):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a whole number, got {text!r}") from None
    if not 0 <= v <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{what} must be between 0 and {INT64_MAX}, got {text}")
    return v


def _limit(text):
    return _count(text, "the limit")


def _event_range(text):
    """START:STOP (either may be empty) as (start, stop); argparse reports errors (exit 2)."""
    if ":" not in text:
        raise argparse.ArgumentTypeError(f"an event range is START:STOP, got {text!r}")
    a, _, b = text.partition(":")
    return (_count(a, "the range start") if a else 0, _count(b, "the range stop") if b else None)


def _parse_range(value):
    # parsed by argparse already (_event_range); kept for callers passing text
    if not value:
        return None
    return value if isinstance(value, tuple) else _event_range(value)


def _expressions(items):
    out = {}
    for e in items:
        name, eq, text = e.partition("=")
        if not eq or not name.strip():
            raise SystemExit2(f"--expr wants NAME=EXPR, got {e!r}")
        out[name.strip()] = text
    return out or None


class SystemExit2(Exception):
    """A user error found after parsing: one line, exit 2."""


_HIST_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)$", re.S)


def _aggregations(hists):
    """--hist specs as the plain dicts every API takes; each histogram gets a unique name."""
    specs = []
    for h in hists:
        m = _HIST_NAME.match(h)
        name, rest = (m.group(1), m.group(2)) if m else (None, h)
        parts = rest.rsplit(":", 3)
        if len(parts) != 4 or not parts[0].strip():
            raise SystemExit2(f"--hist wants [NAME=]EXPR:BINS:LOW:HIGH, got {h!r}")
        expr, bins, low, high = parts
        specs.append([name, expr.strip(), _hist_bins(bins, h), _hist_edge(low, "LOW", h),
                      _hist_edge(high, "HIGH", h), h])
        if not specs[-1][3] < specs[-1][4]:
            raise SystemExit2(f"--hist {h!r}: LOW ({low.strip()}) must be less than HIGH ({high.strip()})")
    exprs = [s[1] for s in specs if s[0] is None]
    out = []
    for name, expr, bins, low, high, text in specs:
        if name is None:
            name = expr if exprs.count(expr) == 1 else text.strip()
        out.append({"kind": "hist1d", "name": name, "x": expr, "bins": bins, "low": low, "high": high})
    return out


def _hist_bins(text: str, spec: str) -> int:
    try:
        bins = int(text)
    except ValueError:
        raise SystemExit2(f"--hist {spec!r}: BINS must be a whole number, got {text.strip()!r}") from None
    if bins < 1:
        raise SystemExit2(f"--hist {spec!r}: BINS must be at least 1, got {bins}")
    return bins


def _hist_edge(text: str, what: str, spec: str) -> float:
    import math

    try:
        v = float(text)
    except ValueError:
        raise SystemExit2(f"--hist {spec!r}: {what} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(v):
        raise SystemExit2(f"--hist {spec!r}: {what} must be finite, got {text.strip()!r}")
    return v


_AGG_SUFFIXES = (".json", ".root")


def check_output(path: str | None, aggregations: bool):
    """Refuse an --output the query could not write, before the query runs."""
    if path is None:
        return
    if aggregations and not path.endswith(_AGG_SUFFIXES):
        raise SystemExit2(f"with --hist, --output must end in .json or .root, got {path!r}")
    from .query import sinks

    if not aggregations and sinks.format_of(path) is None:
        raise SystemExit2(f"--output must end in one of {', '.join(sorted(sinks.SUFFIXES))}, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SystemExit2(f"--output {path!r}: the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise SystemExit2(f"--output {path!r} is a folder")


def cmd_query(args):
    from .query.lang import split_columns

    columns = split_columns(args.columns) if args.columns else None
    expressions = _expressions(args.expr)
    pushdown = "off" if args.no_pushdown else args.pushdown
    aggs = _aggregations(args.hist)
    check_output(args.output, bool(aggs))
    if args.output and not aggs:
        return _query_to_file(args, columns, expressions, pushdown)
    if args.server:
        client = server_args.client(args)
        result = client.run(args.dataset, columns=columns, where=args.where, expressions=expressions,
                            language=args.language, event_range=_parse_range(args.events),
                            limit=args.limit, pushdown=pushdown, aggregations=aggs,
                            progress=sys.stderr.isatty())
    else:
        from .progress import Progress

        with _session(args) as s, Progress("query") as bar:
            def on_progress(ev):
                bar.total_files, bar.total_events = ev.partitions_total, ev.events_total
                bar.update(files=ev.partitions_done - bar.files, events=ev.events_done - bar.events)

            result = s.run(args.dataset, columns=columns if not aggs else (columns or []),
                           where=args.where, expressions=expressions, language=args.language,
                           event_range=_parse_range(args.events), limit=args.limit,
                           pushdown=pushdown, aggregations=aggs, on_progress=on_progress)
    _print_result(result, args)
    return 0


def _query_to_file(args, columns, expressions, pushdown):
    """``query -o FILE``: rows written as they arrive (query/sinks.py), never collected."""
    from .query import sinks
    from .query.results import QueryResult

    query_args = dict(columns=columns, where=args.where, expressions=expressions, language=args.language,
                      event_range=_parse_range(args.events), limit=args.limit)
    if args.server:
        client = server_args.client(args)
        summary, failures, rows, head = sinks.write_events(
            client.stream(args.dataset, pushdown=pushdown, **query_args), args.output, keep_rows=args.show)
    else:
        from .progress import Progress
        from .session import empty_result

        with _session(args) as s, Progress("query") as bar:
            def on_progress(ev):
                bar.total_files, bar.total_events = ev.partitions_total, ev.events_total
                bar.update(files=ev.partitions_done - bar.files, events=ev.events_done - bar.events)

            from .catalogue import multi

            if multi.is_multi(args.dataset):   # a pattern: one file with a `dataset` column
                schema, events = multi.stream(s, args.dataset, pushdown=pushdown, **query_args)
                empty = schema.empty_table
            else:
                m, query = s.build_query(args.dataset, **query_args)
                events, empty = s.stream_query(m, query, pushdown=pushdown), lambda: empty_result(m, query)
            summary, failures, rows, head = sinks.write_events(
                events, args.output, empty_table=empty, on_progress=on_progress, keep_rows=args.show)
    args.output_written = rows
    _print_result(QueryResult(head, summary, failures), args, written=True)
    return 0


def _json_value(v):
    return v.as_dict() if hasattr(v, "as_dict") else v


def _print_result(result, args, written=False):
    s = result.summary
    aggregates = s.aggregates or {}
    if args.json:
        d = s.as_dict()
        if aggregates:
            d["aggregates"] = {k: _json_value(v) for k, v in aggregates.items()}
        print(json.dumps(d, indent=1, default=str))
    else:
        print(s.render())
        for name, value in aggregates.items():
            shown = value.render() if hasattr(value, "render") else value
            print(f"  {name}: {shown}")
    if args.show and result.table is not None and not args.json:
        print(format_rows(result.table, args.show, total=args.output_written if written else None))
    if args.output and aggregates:
        write_aggregates(aggregates, args.output)
        if not args.json:
            print(f"  wrote {len(aggregates)} aggregate(s) to {args.output}")
    elif written:
        if not args.json:
            print(f"  wrote {args.output_written:,} rows to {args.output}")
    elif args.output and result.table is not None:
        write_table(result.table, args.output)
        if not args.json:
            print(f"  wrote {result.table.num_rows:,} rows to {args.output}")


def _cell(v, width=30) -> str:
    if isinstance(v, float):
        text = f"{v:.6g}"
    elif isinstance(v, list):
        text = "[" + ", ".join(_cell(x, width) for x in v[:4]) + (", ..." if len(v) > 4 else "") + "]"
    else:
        text = "None" if v is None else str(v)
    return text if len(text) <= width else text[:width - 3] + "..."


def format_rows(table, n: int, total: int | None = None) -> str:
    """The first ``n`` rows as a text table (lists shortened to their first entries);
    ``total``: the answer's rows when ``table`` holds only its head."""
    head = table.slice(0, n).to_pylist()
    names = table.column_names
    cells = [[_cell(r[c]) for c in names] for r in head]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(names)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(names, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    lines.append(f"({len(head)} of {table.num_rows if total is None else total:,} rows)")
    return "\n".join(lines)


def write_aggregates(aggregates: dict, path: str):
    """Histograms (and scalar aggregates) to .json, or histograms to a ROOT file (TH1D
    per histogram, read back by uproot as ``f[name].to_hist()``)."""
    if path.endswith(".json"):
        with open(path, "w") as f:
            json.dump({k: _json_value(v) for k, v in aggregates.items()}, f, indent=1, default=str)
    elif path.endswith(".root"):
        import uproot

        with uproot.recreate(path) as f:
            for name, v in aggregates.items():
                if hasattr(v, "to_hist"):
                    f[name] = v.to_hist()
    else:
        raise SystemExit2(f"with --hist, --output must end in .json or .root, got {path!r}")


def write_table(table, path):
    import pyarrow as pa

    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif path.endswith((".arrow", ".feather", ".ipc")):
        with pa.OSFile(path, "wb") as f, pa.ipc.new_file(f, table.schema) as w:
            w.write_table(table)
    else:
        raise SystemExit2(f"--output must end in .arrow or .parquet, got {path!r}")


def cmd_generate(args):
    from . import demo_data

    t0 = time.perf_counter()
    demo_data.write_nanoaod(args.path, events=args.events, seed=args.seed, photons=True,
                             extra_branches=args.extra_columns)
    print(f"wrote {args.events:,} events to {args.path} in {time.perf_counter() - t0:.1f} s")


def cmd_demo(args):
    """The README's first command ends here: cluster up, demo data in, one query out."""
    from . import demo_data, paths
    from .cluster import Cluster
    from .errors import UnknownDatasetError

    c = Cluster(paths.default_cluster_dir())
    c.up(osds=args.osds)
    conf = args.conf or c.conf_path
    data_dir = os.path.join(paths.default_cluster_dir(), "demo-data")
    os.makedirs(data_dir, exist_ok=True)
    src = os.path.join(data_dir, f"nanoaod_demo_{args.events}.root")
    if not os.path.exists(src):
        print(f"generating {args.events:,} NanoAOD-like events into {src} ...")
        tmp = src + ".tmp"
        demo_data.write_nanoaod(tmp, events=args.events, seed=1)
        os.replace(tmp, src)
    from .session import Session

    dataset = f"demo{args.events}"
    with Session.open(conf=conf, pool=args.pool) as s:
        try:
            m = s.manifest(dataset)
            print(f"dataset {dataset!r} is already ingested (v{m.version}, {m.num_events:,} events)")
        except UnknownDatasetError:
            t0 = time.perf_counter()
            m = s.ingest([src], dataset, partition_events=50_000)
            print(f"ingested {m.num_events:,} events into {m.num_partitions} partitions "
                  f"in {time.perf_counter() - t0:.1f} s")
        cut = "(nMuon >= 2) & (MET_pt > 40)"
        cols = ["run", "event", "MET_pt", "Muon_pt", "Muon_eta"]
        print(f"\nskyhook query {dataset} --where '{cut}' --columns {','.join(cols)}")
        push = s.run(dataset, columns=cols, where=cut, pushdown="on")
        print(push.summary.render())
        print("\nthe same with --no-pushdown (read the objects, filter on the client):")
        plain = s.run(dataset, columns=cols, where=cut, pushdown="off")
        print(plain.summary.render())
        if not push.table.equals(plain.table):
            print("MISMATCH between pushdown and --no-pushdown results", file=sys.stderr)
            return 1
        print(f"\nresults identical; pushdown returned "
              f"{push.summary.bytes_returned:,} B, the plain read {plain.summary.bytes_returned:,} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
