"""The dataset subcommands of the ``skyhook`` CLI: ingest, append, reshard, describe,
list, meta, delete, gc.  Each parser sets ``func(args) -> exit code``; ``get_store(args)``
(given by the caller) opens the rados_io.Store.  Only argument handling lives here.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings

from .. import defaults
from ..errors import SkyhookError
from . import operations as ops


def _encoding_args(p, defaults: bool):
    p.add_argument("--partition-events", type=int, default=None, metavar="N",
                   help="at most N events per partition")
    p.add_argument("--partition-mb", type=float, default=None, metavar="M",
                   help="target partition size in MB of uncompressed Arrow data"
                        + (" (default 64)" if defaults else " (default: 64)"))
    p.add_argument("--format", choices=("arrow", "parquet"), default=None,
                   help="partition encoding" + (" (default arrow)" if defaults else " (default: unchanged)"))
    p.add_argument("--compression", choices=("lz4", "zstd", "none"), default=None,
                   help="buffer compression" + (" (default none)" if defaults else " (default: unchanged)"))
    p.add_argument("--workers", type=int, default=2, help="files processed in parallel (default 2)")


def _source_args(p):
    p.add_argument("files", nargs="+", metavar="FILE", help="ROOT or HDF5 files")
    p.add_argument("--dataset", required=True, metavar="NAME")
    p.add_argument("--tree", default=None, help="TTree/RNTuple name, or HDF5 group (default: Events, "
                                                "or the only tree)")
    p.add_argument("--strict", action="store_true",
                   help="refuse files with columns that cannot be stored, instead of skipping them")
    p.add_argument("--hdf5-map", default=None, metavar="JSON",
                   help='HDF5 layout when names do not tell: \'{"events": "events", "collections": '
                        '{"particles": {"count": "nparticles", "start": "start"}}, "exclude": []}\'')
    p.add_argument("--progress", action=argparse_bool(), default=None,
                   help="show a progress bar (default: when stderr is a terminal)")


def _meta_args(p, word: str):
    p.add_argument(f"--{word}", action="append", default=[], metavar="KEY=VALUE", dest="meta",
                   help="a metadata key (repeatable): is_mc=true, year=2018, sqrt_s=13, process=DY, "
                        "cross_section_pb=6077.2, lumi_pb=59740, ... (values: true/false, numbers, JSON, text)")
    p.add_argument(f"--{word}-file", default=None, metavar="FILE", dest="meta_file",
                   help="metadata from a YAML or JSON file (one mapping); --" + word + " wins")


def _metadata_args(args) -> dict:
    from ..catalogue import metadata as meta_mod

    out = meta_mod.load_file(args.meta_file) if args.meta_file else {}
    out.update(meta_mod.parse_assignments(args.meta))
    return out


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def _bytes(args):
    return None if args.partition_mb is None else int(args.partition_mb * (1 << 20))


# what the user can fix (a bad file, name or value): exit 2, as everywhere in the CLI
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError,
                NotADirectoryError)


def _message(e: BaseException) -> str:
    text = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
    return text or type(e).__name__


def _run(fn):
    """Every failure as one line on stderr: exit 2 for user errors (bad input, unknown
    names), 1 for the rest (cluster, concurrent update, anything unexpected)."""
    def handler(args):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: print(f"warning: {m}", file=sys.stderr)
            try:
                return fn(args) or 0
            except _USER_ERRORS as e:
                print(f"skyhook: error: {_message(e)}", file=sys.stderr)
                return 2
            except (SkyhookError, OSError) as e:
                print(f"skyhook: error: {_message(e)}", file=sys.stderr)
                return 1
            except Exception as e:  # noqa: BLE001 - a library's own exception: still one line
                print(f"skyhook: error: {type(e).__name__}: {_message(e)}", file=sys.stderr)
                return 1
    return handler


def add_dataset_commands(subparsers, get_store):
    def hdf5_map(args):
        return json.loads(args.hdf5_map) if args.hdf5_map else None

    def do_ingest(args):
        with get_store(args) as store:
            m = ops.ingest(store, args.files, args.dataset, tree=args.tree,
                           partition_events=args.partition_events,
                           partition_bytes=_bytes(args) or (None if args.partition_events else ops.DEFAULT_PARTITION_BYTES),
                           format=args.format or "arrow",
                           compression=None if args.compression in (None, "none") else args.compression,
                           workers=args.workers, strict=args.strict, progress=args.progress,
                           hdf5_mapping=hdf5_map(args), metadata=_metadata_args(args))
        print(f"dataset {m.dataset} version {m.version}: {m.num_events:,} events in "
              f"{m.num_partitions} partitions from {len(m.sources)} file(s)")

    def do_append(args):
        with get_store(args) as store:
            m = ops.append(store, args.files, args.dataset, tree=args.tree,
                           on_duplicate=args.on_duplicate, partition_events=args.partition_events,
                           partition_bytes=_bytes(args), format=args.format,
                           compression=args.compression, workers=args.workers, strict=args.strict,
                           progress=args.progress, hdf5_mapping=hdf5_map(args))
        print(f"dataset {m.dataset} version {m.version}: {m.num_events:,} events in "
              f"{m.num_partitions} partitions from {len(m.sources)} file(s)")

    def do_reshard(args):
        with get_store(args) as store:
            m = ops.reshard(store, args.dataset, partition_events=args.partition_events,
                            partition_bytes=_bytes(args), format=args.format,
                            compression=args.compression, workers=args.workers,
                            progress=args.progress)
        print(f"dataset {m.dataset} version {m.version}: {m.num_partitions} partitions "
              f"({m.encoding['format']}); run `skyhook gc {m.dataset}` to remove the old ones")

    def do_describe(args):
        if args.full:
            with get_store(args) as store:
                d = ops.describe(store, args.dataset)
            print(json.dumps(d, indent=1) if args.json else ops.render_description(d))
            return
        # bounded by default: the header and partition table, never every statistic
        from ..storage import manifest as mf
        from ..storage import summary as sm
        from ..storage import versions as versions_mod

        with get_store(args) as store:
            m = mf.load_manifest(store, args.dataset)
            d = sm.summary(m)
            d["versions"] = [dataclasses.asdict(v) for v in versions_mod.history(store, m.dataset)]
            srcs = sm.source_page(m, 0, 10)
        print(json.dumps(dict(d, sources=srcs), indent=1) if args.json else sm.render(d, srcs))

    def do_list(args):
        from ..catalogue import listing

        with get_store(args) as store:
            if not args.patterns and not args.where and not args.long:
                names = ops.list_datasets(store)   # as before: the names only
                print(json.dumps(names) if args.json else "\n".join(names))
                return
            rows = listing.entries(store, args.patterns or None, args.where)
        if args.json:
            print(json.dumps(rows, indent=1))
        elif args.long:
            for r in rows:
                meta = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(r["metadata"].items()))
                events = "?" if r["events"] is None else f"{r['events']:,}"
                print(f"{r['name']}  v{r['version']}  {events} events  {meta}".rstrip())
        else:
            print("\n".join(r["name"] for r in rows))

    def do_meta(args):
        set_ = _metadata_args(args)
        with get_store(args) as store:
            if not set_ and not args.unset:
                from ..storage import manifest as mf

                m = mf.load_manifest(store, args.dataset)
            else:
                m = ops.set_metadata(store, args.dataset, set_, args.unset)
                print(f"dataset {m.dataset} version {m.version}: {m.change or 'metadata unchanged'}",
                      file=sys.stderr)
        if args.json:
            print(json.dumps(m.metadata, indent=1, sort_keys=True))
        else:
            for k in sorted(m.metadata):
                print(f"{k} = {json.dumps(m.metadata[k])}")

    def do_delete(args):
        with get_store(args) as store:
            removed = ops.delete(store, args.dataset)
        print(f"deleted dataset {args.dataset} ({len(removed)} partition objects)")

    def do_gc(args):
        with get_store(args) as store:
            removed = ops.gc(store, args.dataset, grace=args.grace, keep_versions=args.keep_versions,
                             keep_days=args.keep_days)
        print(f"removed {len(removed)} unreferenced partition objects of {args.dataset}"
              + (f"; collected version(s) {', '.join(f'v{v}' for v in removed.versions)}"
                 if removed.versions else "")
              + f"; versions kept: {', '.join(f'v{v}' for v in removed.kept)}")

    p = subparsers.add_parser("ingest", help="create a dataset from ROOT/HDF5 files")
    _source_args(p)
    _encoding_args(p, True)
    _meta_args(p, "meta")
    p.set_defaults(func=_run(do_ingest))

    p = subparsers.add_parser("append", help="add files to a dataset (a new version)")
    _source_args(p)
    _encoding_args(p, False)
    p.add_argument("--on-duplicate", choices=("skip", "error"), default="skip",
                   help="a file already in the dataset (same sha256): skip it or fail")
    p.set_defaults(func=_run(do_append))

    p = subparsers.add_parser("reshard", help="rewrite a dataset's partitions (a new version)")
    p.add_argument("dataset")
    _encoding_args(p, False)
    p.add_argument("--progress", action=argparse_bool(), default=None)
    p.set_defaults(func=_run(do_reshard))

    p = subparsers.add_parser("describe", help="summary of a dataset (counts, sizes, metadata, kept versions)")
    p.add_argument("dataset", help="NAME, or NAME@vN for a kept older version")
    p.add_argument("--json", action="store_true")
    p.add_argument("--full", action="store_true",
                   help="every source and every column with its min/max (reads all statistics)")
    p.set_defaults(func=_run(do_describe))

    p = subparsers.add_parser("list", help="the datasets in the pool (by pattern and metadata)")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="shell wildcards on the names, e.g. 'DYJets*'")
    p.add_argument("--where", default=None, metavar="FILTER",
                   help="metadata filter, e.g. \"year == 2018 and is_mc and process in ['DY', 'ttbar']\"")
    p.add_argument("-l", "--long", action="store_true", help="with version, events and metadata")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(do_list))

    p = subparsers.add_parser("meta", help="show or change a dataset's metadata (a change is a new version)")
    p.add_argument("dataset")
    _meta_args(p, "set")
    p.add_argument("--unset", action="append", default=[], metavar="KEY", help="remove a key (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(do_meta))

    p = subparsers.add_parser("delete", help="remove a dataset and its partitions")
    p.add_argument("dataset")
    p.set_defaults(func=_run(do_delete))

    p = subparsers.add_parser("gc", help="remove partitions that no manifest names")
    p.add_argument("dataset")
    p.add_argument("--grace", type=float, default=defaults.GC_GRACE, metavar="SECONDS",
                   help="keep unnamed partitions written less than SECONDS ago: a concurrent "
                        f"writer's, not committed yet (default {defaults.GC_GRACE})")
    p.add_argument("--keep-versions", type=int, default=1, metavar="N",
                   help="keep the N newest versions readable as DATASET@vN (default 1: the current one)")
    p.add_argument("--keep-days", type=float, default=None, metavar="D",
                   help="also keep every version that was current in the last D days")
    p.set_defaults(func=_run(do_gc))
