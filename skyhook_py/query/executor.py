"""The executor: runs a plan's tasks against the OSDs and yields what happens.

Pushdown tasks are asynchronous object-class calls (``aio_execute``); plain reads
run in a small thread pool and are evaluated on the client by the reference
evaluator.  The number of calls in flight is bounded globally and per OSD (a
hung OSD then stalls only its own slots, see FACTS.md), results are yielded in
partition order as soon as the prefix is complete, and new calls are only sent
when the consumer has taken results: a slow consumer slows the scan instead of
filling the coordinator's memory.

Error policy (DESIGN.md non-negotiables): a class errno is never resent, except
-EBUSY (this client used more than its share of the OSD while others wait: resent
after a pause, formats/README.md "Time slices"); the class missing on an OSD
(-EOPNOTSUPP) falls back to a plain read; a librados timeout or a lost connection is
retried a bounded number of times.

Time slices (formats/README.md): the class may answer part of a partition's rows
and say where to resume; the executor then sends the rest at once (with the
aggregates so far, so that the class goes on accumulating in order) and joins
the slices into one answer for the partition.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno as E
import queue
import threading
import time

import pyarrow as pa

from .. import defaults
from ..errors import RETRYABLE_ERRNOS, ClusterError, DeadlineExceeded, ObjectClassError, class_errno_message  # noqa: F401
from ..storage import checksum
from . import codec
from .planner import Mode
from .results import PartitionFailure, Progress, ResultBatch
from .reply_compression import ReplyCompression
from .slices import Slices

CLASS_NAME = defaults.CLASS_NAME


# -- the executor's events, besides ResultBatch / PartitionFailure / Progress ---------

@dataclasses.dataclass
class PartitionDone:
    """One partition answered: its figures and partial aggregates, for the summary.
    ``mode`` is "pushdown", "read" or "fallback"."""

    task: object
    mode: str
    figures: dict
    aggregates: list


@dataclasses.dataclass
class Retrying:
    """A call to ``task``'s object is resent (the cluster map likely changed)."""

    task: object


@dataclasses.dataclass
class Idle:
    """No call completed for ``idle_after`` seconds (yielded only when ``run`` is given
    ``idle_after``: a consumer that holds events back, e.g. to send them in one
    message, uses it to send them on time)."""


# -- what one call or read completes with (internal) ----------------------------------

@dataclasses.dataclass
class _Answered:
    mode: str
    result: object   # results.ScanResult


@dataclasses.dataclass
class _Failed:
    errno: int
    message: str


# EBUSY answers resent per partition before giving up: with pauses growing to 0.25 s,
# about 20 s (a deadline ends it sooner)
BUSY_RETRIES = 100

_RETRY = "retry"        # _classify's other outcomes
_FALLBACK = "fallback"
_RESUME = "resume"



class Executor:
    def __init__(self, store, max_in_flight: int = 16, per_osd: int = 4,
                 max_reply: int = codec.DEFAULT_MAX_REPLY, retries: int = 3,
                 reply_compression: str = "auto"):
        self.store = store
        self.max_in_flight = max_in_flight
        self.per_osd = per_osd
        self.max_reply = max_reply
        self.retries = retries
        # per OSD: compressed replies while its link is slow (query/reply_compression.py)
        self.reply_compression = ReplyCompression(reply_compression)
        # the longest time slice to ask the class for, in µs of CPU (0: the class's own;
        # tests set 1 to cut every partition into as many slices as it can)
        self.slice_us = 0
        # object -> primary OSD, asked of the mon once per object (a round trip each):
        # only scheduling fairness depends on it, so it is refreshed when a call to the
        # object times out or loses its connection (the map has likely changed)
        self._osd_cache: dict[str, int | None] = {}
        self._readers = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="skyhook-read")
        self._requests = _LRU(256)   # encoded requests, by query and row range

    def close(self):
        self._readers.shutdown(wait=False, cancel_futures=True)

    # -- placement, for per-OSD caps ---------------------------------------------
    def _osd(self, obj: str):
        if obj not in self._osd_cache:
            self._osd_cache[obj] = self.store.osd_for(obj)
        return self._osd_cache[obj]

    # -- running ------------------------------------------------------------------
    def run(self, manifest, plan, query, *, deadline: float | None = None,
            fail_fast: bool = True, limit: int | None = None, cancelled=None,
            idle_after: float | None = None):
        """Yield ResultBatch / PartitionFailure / Progress events, a PartitionDone per
        task (for the summary), a Retrying per resent call and, with ``idle_after``
        (seconds), an Idle whenever no call completed for that long."""
        tasks = list(plan.tasks)
        done_q: queue.Queue = queue.Queue()
        in_flight: dict[int, tuple] = {}        # task position -> (task, osd, mode)
        per_osd: dict = {}
        attempts = [0] * len(tasks)
        busy = [0] * len(tasks)                  # EBUSY answers per task (not counted as retries)
        modes = [t.mode for t in tasks]
        finished: dict[int, tuple] = {}          # results waiting for their prefix
        next_submit = 0
        retry_queue: list[int] = []
        next_yield = 0
        rows_yielded = 0
        events_done = 0
        window = max(self.max_in_flight * 2, 4)
        query_key = query.key()
        # the class stops work whose caller has gone: the deadline on the OSDs' clock
        # (none for a deadline beyond what 63 bits of ms hold, e.g. a gRPC "no deadline")
        wall = None if deadline is None else (time.time() + deadline - time.monotonic()) * 1000
        deadline_ms = max(1, int(wall)) if wall is not None and wall < 2**62 else 0
        cap_for = _reply_cap_estimator(manifest, query, self.max_reply)
        caps = [cap_for(t) for t in tasks]       # task position -> its calls' reply cap

        compressions: dict[int, str] = {}      # task position -> its last call's reply compression
        sent_at: dict[int, float] = {}          # task position -> when its last call was sent
        walls: dict[int, float] = {}            # task position -> its last call's wall time
        slices: dict[int, Slices] = {}          # task position -> its time slices so far
        sent_limits: dict[int, int] = {}         # task position -> the limit its first call sent

        def row_stop(task):
            # every partition read whole shares one request (row_stop -1)
            whole = task.row_start == 0 and task.row_stop == _partition_rows(manifest, task)
            return -1 if whole else task.row_stop

        def encode(task, cap, row_start, limit, compression, resume=()):   # (limit: this call's, -1 for none)
            return codec.encode_scan_request(
                outputs=query.outputs, where=query.where, row_start=row_start,
                row_stop=row_stop(task), limit=limit, aggregations=query.aggregations,
                compression=compression, max_reply_bytes=cap,
                deadline_ms=deadline_ms, slice_us=self.slice_us, resume=resume)

        def request_for(task, cap, remaining, compression):
            # Building a flatbuffer in pure Python costs 50 µs to 1 ms: each distinct one
            # once.  The deadline is new with every query: it is written into a copy.
            limit_ = -1 if remaining is None else remaining
            key = (query_key, task.row_start, row_stop(task), limit_, compression,
                   cap, bool(deadline_ms), self.slice_us)
            req = self._requests.get(key)
            if req is None:
                req = encode(task, cap, task.row_start, limit_, compression)
                self._requests.put(key, req)
            elif deadline_ms:
                req = codec.with_deadline(req, deadline_ms)
            return req

        def submit(pos):
            task = tasks[pos]
            mode = modes[pos]
            osd = self._osd(task.object) if mode == Mode.PUSHDOWN else "client"
            in_flight[pos] = (task, osd, mode)
            per_osd[osd] = per_osd.get(osd, 0) + 1
            attempts[pos] += 1
            remaining = None if limit is None else max(0, limit - rows_yielded)
            if mode == Mode.PUSHDOWN:
                cap = caps[pos]
                compression = compressions[pos] = self.reply_compression.for_osd(osd)
                if pos in slices:   # the rest of a sliced scan: never cached (it carries state)
                    req = encode(task, cap, compression=compression, **slices[pos].resume_args())
                else:
                    sent_limits[pos] = -1 if remaining is None else remaining
                    req = request_for(task, cap, remaining, compression)
                sent_at[pos] = time.monotonic()
                try:
                    self.store.aio_execute(task.object, CLASS_NAME, "scan", req, cap,
                                           lambda err, data, pos=pos: arrived(pos, err, data))
                except ClusterError as e:
                    done_q.put((pos, E.ENOTCONN, str(e).encode()))
            else:
                self._readers.submit(self._read_and_evaluate, task, query, remaining, pos, done_q,
                                     manifest.partition_checksum(task.partition))

        def arrived(pos, err, data):   # (in librados's thread)
            walls[pos] = time.monotonic() - sent_at[pos]
            done_q.put((pos, err, data))

        def can_submit(pos):
            if len(in_flight) >= self.max_in_flight or pos >= next_yield + window:
                return False
            if modes[pos] != Mode.PUSHDOWN:
                return True
            return per_osd.get(self._osd(tasks[pos].object), 0) < self.per_osd

        while next_yield < len(tasks):
            if cancelled is not None and cancelled():
                return
            if limit is not None and rows_yielded >= limit:
                return
            # submit what the caps allow (retries first)
            while retry_queue and can_submit(retry_queue[0]):
                submit(retry_queue.pop(0))
            while next_submit < len(tasks) and not retry_queue and can_submit(next_submit):
                submit(next_submit)
                next_submit += 1
            # yield the finished prefix
            progressed = False
            while next_yield in finished:
                outcome = finished.pop(next_yield)
                task = tasks[next_yield]
                next_yield += 1
                progressed = True
                events_done += task.event_stop - task.event_start
                if isinstance(outcome, _Answered):
                    result = outcome.result
                    yield PartitionDone(task, outcome.mode, result.figures, result.aggregates)
                    if result.table is not None and result.table.num_rows:
                        t = result.table
                        if limit is not None:
                            t = t.slice(0, max(0, limit - rows_yielded))
                        rows_yielded += t.num_rows
                        if t.num_rows:
                            whole = t.num_rows == result.table.num_rows
                            # a compressed stream is decoded here, not passed on: the
                            # coordinator's clients are promised plain Arrow IPC
                            plain = compressions.get(next_yield - 1, "none") == "none"
                            yield ResultBatch(task.partition, t, result.ipc if whole and plain else None)
                else:
                    yield PartitionFailure(task.partition, task.object, outcome.errno, outcome.message)
                    if fail_fast:
                        return
                yield Progress(next_yield, len(tasks), events_done, plan.events_total)
            if progressed:
                continue
            if not in_flight:
                continue
            # wait for one completion
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise DeadlineExceeded(f"query deadline exceeded with {len(tasks) - next_yield} partitions to go")
            wait = min(timeout, 1.0) if timeout is not None else 1.0
            try:
                pos, err, data = done_q.get(timeout=wait if idle_after is None else min(wait, idle_after))
            except queue.Empty:
                if idle_after is not None:
                    yield Idle()
                continue
            task, osd, mode = in_flight.pop(pos)
            sharing = per_osd[osd]   # calls to this OSD in flight when this one came back
            per_osd[osd] -= 1
            if mode == Mode.PUSHDOWN and err == E.EMSGSIZE and caps[pos] < self.max_reply:
                caps[pos] = self.max_reply   # the estimate was short: once more, with the full cap
                attempts[pos] -= 1
                retry_queue.insert(0, pos)
                continue
            finished_outcome = self._classify(task, mode, err, data, pos, attempts, busy)
            if isinstance(finished_outcome, _Answered) and mode == Mode.PUSHDOWN:
                figures = finished_outcome.result.figures
                self.reply_compression.observe(osd, len(data), walls[pos], figures.get("cpu_ns", 0) / 1e9,
                                               sharing)
            if isinstance(finished_outcome, _Answered) and mode == Mode.PUSHDOWN:
                finished_outcome = self._join_slices(pos, finished_outcome, slices, sent_limits[pos])
                if finished_outcome == _RESUME:
                    attempts[pos] = 0           # a new call, not a retry
                    retry_queue.insert(0, pos)  # the rest of the partition, before anything new
                    continue
            if isinstance(finished_outcome, _Answered):
                finished_outcome = _check_rows(task, finished_outcome)
            elif finished_outcome != _RETRY:
                slices.pop(pos, None)           # failed, or read whole on the client instead
            if finished_outcome == _RETRY:
                retry_queue.append(pos)
                yield Retrying(task)
            elif finished_outcome == _FALLBACK:
                modes[pos] = Mode.READ
                retry_queue.append(pos)
            else:
                finished[pos] = finished_outcome

    @staticmethod
    def _join_slices(pos, answered: _Answered, slices: dict, sent_limit: int):
        """_RESUME when the class stopped at the end of a time slice (the slice is
        kept); else the partition's answer, its slices joined."""
        result = answered.result
        sliced = slices.get(pos)
        if result.resume_row >= 0:
            if sliced is None:
                sliced = slices[pos] = Slices(limit=sent_limit)
            sliced.results.append(result)
            return _RESUME
        if sliced is None:
            return answered
        del slices[pos]
        return _Answered(answered.mode, sliced.joined(result))

    def _classify(self, task, mode, err, data, pos, attempts, busy):
        if mode != Mode.PUSHDOWN:   # plain read: data is an _Answered or a _Failed
            return data
        if err == 0:
            try:
                result = codec.decode_scan_reply(data)
                result.figures = dict(result.figures or {}, reply_bytes=len(data))
                return _Answered("pushdown", result)
            except Exception as e:  # a reply we cannot decode is a class bug: do not resend
                return _Failed(E.EBADMSG, f"cannot decode the reply for {task.object!r}: {e}")
        if err == E.EOPNOTSUPP:
            return _FALLBACK
        if err == E.EBUSY and busy[pos] < BUSY_RETRIES:
            # this client used more than its share while others wait: pause, then resend
            # (its share recovers as its usage decays; formats/README.md "Time slices")
            busy[pos] += 1
            attempts[pos] -= 1   # a pause, not a failed attempt
            time.sleep(min(0.01 * 1.5 ** busy[pos], 0.25))
            return _RETRY
        if err in RETRYABLE_ERRNOS and attempts[pos] <= self.retries:
            self._osd_cache.pop(task.object, None)
            time.sleep(min(0.05 * 2 ** attempts[pos], 1.0))
            return _RETRY
        msg = class_errno_message(err)
        return _Failed(err, f"partition {task.object!r}: {msg}")

    def _read_and_evaluate(self, task, query, remaining, pos, done_q, crc=None):
        """A plain read: fetch the whole object, verify its checksums (``crc``, the
        manifest's record; None: not recorded), evaluate on the client."""
        from . import reference

        try:
            data = self.store.read(task.object)
            try:
                checksum.verify(data, crc, f"partition {task.object!r}")
            except checksum.ChecksumMismatch as e:  # the class answers EBADMSG for the same bytes
                raise ObjectClassError(E.EBADMSG, "", str(e)) from e
            needed = query.columns()
            table = decode_partition(data, task.object)
            table = table.select([c for c in table.column_names if c in needed])
            result = reference.scan_table(
                table, query.outputs, query.where, task.row_start, task.row_stop,
                -1 if remaining is None else remaining, query.aggregations)
            result.figures = dict(result.figures or {}, bytes_transferred=len(data), object_bytes=len(data))
            mode = "fallback" if task.mode == Mode.PUSHDOWN else "read"
            done_q.put((pos, 0, _Answered(mode, result)))
        except FileNotFoundError:
            done_q.put((pos, E.ENOENT, _Failed(E.ENOENT, f"partition {task.object!r}: {class_errno_message(E.ENOENT)}")))
        except ObjectClassError as e:
            done_q.put((pos, e.errno, _Failed(e.errno, str(e))))
        except Exception as e:  # noqa: BLE001 - reported per partition, the query decides
            done_q.put((pos, E.EIO, _Failed(E.EIO, f"partition {task.object!r}: {type(e).__name__}: {e}")))


def _check_rows(task, answered: _Answered):
    """An answer must cover exactly the task's rows, as the manifest records them: a
    partition object with fewer (or more) rows than its manifest entry would otherwise
    give a silently incomplete answer.  Both the class and the reference evaluator report
    ``rows_scanned`` for the whole row range, whatever the limit."""
    scanned = (answered.result.figures or {}).get("rows_scanned")
    want = task.row_stop - task.row_start
    if scanned is None or int(scanned) == want:
        return answered
    return _Failed(E.EBADMSG, f"partition {task.object!r}: {class_errno_message(E.EBADMSG)}: "
                              f"it answered for {int(scanned)} rows, its manifest entry holds {want}")


# The reply buffer of a call is allocated whole before the call (python-rados), and its
# cost grows with its size: a small query's 8 calls took 1 ms more client CPU with 64 MiB
# buffers than with 1 MiB.  So each call gets a cap from the dataset's bytes per event of
# the columns the outputs read (twice that, for widened types, plus the histograms), and
# only a call that overflows it (EMSGSIZE) is sent again with the executor's full cap.
MIN_REPLY_CAP = 1 << 20


def _reply_cap_estimator(manifest, query, full: int):
    """task -> the reply cap of its first call."""
    sizes, events = manifest.column_bytes(), manifest.num_events
    if not sizes or not events:
        return lambda task: full
    needed = frozenset().union(*(e.columns() for _, e in query.outputs))
    per_event = sum(sizes.get(c, 0) for c in needed) / events
    fixed = 64 * 1024 + sum(16 * a.x_axis.bins * (a.y_axis.bins if a.y_axis else 1) + 256
                            for a in query.aggregations if a.x_axis is not None)

    def cap(task):
        want = 2 * per_event * max(0, task.row_stop - task.row_start) + fixed
        c = MIN_REPLY_CAP
        while c < want and c < full:
            c *= 2
        return min(c, full)

    return cap


def _partition_rows(manifest, task) -> int:
    if getattr(task, "partition_rows", -1) >= 0:
        return task.partition_rows
    p = manifest.partitions[task.partition]
    return p.event_stop - p.event_start


class _LRU:
    """A small thread-safe LRU map (encoded requests are reused across queries)."""

    def __init__(self, size: int):
        import collections

        self._d = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value):
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)


def decode_partition(data: bytes, obj: str = "") -> pa.Table:
    """A partition object (Arrow IPC file or Parquet) as a table, fully validated.

    ``read_all`` only checks the metadata: a corrupt list offset or string offset is
    found by ``validate(full=True)`` (Arrow's ``ValidateFull``, as the object class
    does), before any kernel touches the buffers (a bad offset crashed libarrow).
    Whatever is wrong is EBADMSG, the errno the OSD path gives for the same bytes.
    """
    buf = pa.py_buffer(data)
    try:
        if data[:4] == b"PAR1":
            import pyarrow.parquet as pq

            table = pq.read_table(pa.BufferReader(buf))
        else:
            reader = pa.ipc.open_file(buf)
            batches = []
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                batch.validate(full=True)
                batches.append(batch)
            table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)
        return table
    except (pa.ArrowException, OSError, ValueError) as e:
        raise ObjectClassError(E.EBADMSG, obj, f"partition {obj!r}: {class_errno_message(E.EBADMSG)}: {e}") from e
