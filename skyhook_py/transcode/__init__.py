"""The transcoder: ROOT/HDF5 files -> storage-native partitions of a dataset.

readers (source files -> Arrow record batches of whole events) -> partitioner
(partitions of a target size on event boundaries) -> encoder (Arrow IPC file or
Parquet) + stats (per-column statistics) -> operations (partition objects first,
the manifest last, in one guarded commit).  ``add_dataset_commands`` registers the
CLI subcommands.
"""

from .cli import add_dataset_commands  # noqa: F401
from .operations import (  # noqa: F401
    append,
    delete,
    describe,
    gc,
    ingest,
    list_datasets,
    render_description,
    reshard,
)
