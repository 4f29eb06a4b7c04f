"""Skims run by the coordinator: the query on the coordinator's (read-only) session, the
new partitions and manifest written with its writer identity (``skyhook serve
--ingest-keyring``), so no event passes through the client.

``start_skim`` checks what can be checked at once (the writer identity, the names,
the query) and registers the request; ``SkimRun.events()`` runs the skim in a worker
thread and yields Progress events (from the request's tracked status, at most every
``interval`` seconds) and finally the committed Manifest.  Cancel(request_id) and a
client that goes away cancel it: nothing is committed then.

What it ignores: gRPC (skyhook_py.service.server translates), and how a skim is
written (skyhook_py.transcode.skim).
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

from ..errors import DuplicateQueryError, NoWriterError
from ..query.results import Progress
from .coordinator import Cancellable


@dataclasses.dataclass
class SkimSpec:
    source: str
    dataset: str
    where: str | None = None
    columns: list | None = None
    expressions: dict | None = None
    language: str = "cut"
    event_range: tuple | None = None
    pushdown: str = "auto"
    partition_bytes: int | None = None
    partition_events: int | None = None
    format: str | None = None
    compression: str | None = None
    request_id: str = ""


class SkimRun(Cancellable):
    """One skim in the coordinator (registered among its running requests)."""

    def __init__(self, coordinator, spec: SkimSpec, request_id: str):
        self.coordinator, self.spec, self.id = coordinator, spec, request_id
        self._init_cancellable()
        self.status = coordinator.tracker.new(request_id, "skim", spec.source,
                                              f"skim of {spec.source!r} into {spec.dataset!r} "
                                              f"where {spec.where!r}")
        self.status.output = spec.dataset

    def events(self, interval: float = 0.2):
        """Progress events while the skim runs, then its committed Manifest; raises the
        skim's error (nothing committed then)."""
        from ..transcode.skim import skim

        c, s = self.coordinator, self.spec
        out: dict = {}

        def work():
            try:
                out["manifest"] = skim(
                    c.session, s.source, s.dataset, where=s.where, columns=s.columns,
                    expressions=s.expressions, language=s.language, event_range=s.event_range,
                    pushdown=s.pushdown, write_store=c.writer, partition_bytes=s.partition_bytes,
                    partition_events=s.partition_events, format=s.format, compression=s.compression,
                    status=self.status, cancelled=self.cancelled, progress=False)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                from ..errors import QueryCancelled
                from ..query import tracker

                # an error found before the skim started writing ends the request too
                self.status.release(tracker.CANCELLED if isinstance(e, QueryCancelled) else tracker.FAILED,
                                    f"{type(e).__name__}: {e}")
                out["error"] = e

        t = threading.Thread(target=work, name=f"skim-{self.id[:8]}", daemon=True)
        t.start()
        try:
            last = None
            while True:   # the first Progress goes out at once: it carries the request id
                alive = t.is_alive()
                st = self.status
                p = Progress(st.partitions_done, st.partitions_planned, st.events_processed, st.events_total)
                if p != last:
                    last = p
                    yield p
                if not alive:
                    break
                t.join(interval)
            if "error" in out:
                raise out["error"]
            yield out["manifest"]
        except GeneratorExit:
            self.cancel("was abandoned by its client")
            t.join()
            raise
        finally:
            from ..query import tracker

            self.status.release(tracker.CANCELLED, "the request ended before its outcome")
            c._finished(self)


def start_skim(coordinator, spec: SkimSpec) -> SkimRun:
    """Register a skim after the checks that need no partition (NoWriterError when the
    coordinator is read-only; the query itself is checked when the run starts, before
    anything is written)."""
    from ..storage import manifest as mf

    if coordinator.writer is None:
        raise NoWriterError("this coordinator has no writer identity, so it cannot write a skim: "
                            "start it with `skyhook serve --ingest-keyring KEYRING` (the ingest key), "
                            "or run the skim in-process (`skyhook skim` without --server)")
    mf.check_dataset_name(spec.dataset)
    coordinator.session.manifest(spec.source)   # UnknownDatasetError (NOT_FOUND) at once
    request_id = spec.request_id or uuid.uuid4().hex
    with coordinator._lock:
        if request_id in coordinator._running:
            raise DuplicateQueryError(f"a request with id {request_id!r} is running already")
        run = SkimRun(coordinator, spec, request_id)
        coordinator._running[request_id] = run
    return run
