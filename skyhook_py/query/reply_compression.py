"""Which compression the object class should use for its replies, per OSD.

A reply is an Arrow IPC stream; the class can write it LZ4- or ZSTD-compressed
(ScanRequest.compression; it writes a reply under 64 KiB plain all the same).
Compressing costs the OSD's CPU and the client's, and saves bytes on the network: 10
NanoAOD-like columns shrink 1.9x with LZ4 and 2.8x with ZSTD.  It pays when the link is
the bottleneck, and costs when the OSD's CPU is.

``ReplyCompression(mode)``: ``"none"``, ``"lz4"`` or ``"zstd"`` are used for every call;
``"auto"`` chooses per OSD from how fast its large replies arrived.  For each reply of
at least ``MIN_SAMPLE_BYTES`` the delivery rate is bytes / (wall time − the class's CPU
time), multiplied by the calls to that OSD in flight when it arrived (concurrent replies
share the link, and on a fast link wait for each other in the OSD's queue: either way
each sees a share).  An exponential average per OSD is kept; ``SLOW_LINK_CODEC`` is used
while it is below ``SLOW_BYTES_PER_S`` and dropped once it is above ``FAST_BYTES_PER_S``
(a band, so that a rate near the line does not flip every call).  The first calls to an
OSD are never compressed: there is no evidence yet.

The rate is not the link's alone: it includes the OSD's per-call overhead, so on
loopback with 337 kB replies it reads about 270 MB/s, while over a 1 Gbit/s link it
cannot exceed 125 MB/s.  The line is drawn between them, at 150 MB/s (1.2 Gbit/s).
Below it ZSTD (level 1) compresses faster than the link carries and saves the most:
the whole columns of 1 M events over 1 Gbit/s links took 449 ms plain, 240 ms with LZ4
and 172 ms with ZSTD (benchmarks/results/2026-12-05-reply-compression).  The rate of a
compressed reply is still the link's (its bytes over its transfer time), so the choice
is undone when the link gets faster.

What it ignores: which OSD holds what (the executor asks); how replies are decoded
(Arrow reads compressed IPC streams as they are).
"""

from __future__ import annotations

import threading

MODES = ("none", "lz4", "zstd", "auto")
MIN_SAMPLE_BYTES = 256 << 10      # smaller replies are timed by latency, not bandwidth
SLOW_BYTES_PER_S = 150e6
FAST_BYTES_PER_S = 300e6
SLOW_LINK_CODEC = "zstd"
WEIGHT = 0.5                      # of the newest sample in the average
MIN_TRANSFER_SECONDS = 50e-6


class ReplyCompression:
    """The compression of the next call over each link (see the module's docstring): an
    OSD's, keyed by its id; a Client keys the link to its coordinator the same way
    (service/client.py, with larger samples: a gRPC call's own cost is bigger)."""

    def __init__(self, mode: str = "auto", min_sample_bytes: int = MIN_SAMPLE_BYTES):
        if mode not in MODES:
            from ..errors import QueryError

            raise QueryError(f"reply compression must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.min_sample_bytes = min_sample_bytes
        self._rate: dict = {}          # osd -> averaged bytes/s of its large replies
        self._compressing: dict = {}   # osd -> whether auto compresses its replies now
        self._lock = threading.Lock()

    def for_osd(self, osd) -> str:
        """The compression to ask of ``osd`` now."""
        if self.mode != "auto":
            return self.mode
        return SLOW_LINK_CODEC if self._compressing.get(osd, False) else "none"

    def observe(self, osd, reply_bytes: int, wall_seconds: float, class_cpu_seconds: float,
                in_flight: int = 1) -> None:
        """A reply of ``reply_bytes`` from ``osd`` took ``wall_seconds`` from sending the
        call, ``class_cpu_seconds`` of it in the class; ``in_flight`` calls to that OSD
        (this one included) were outstanding when it arrived."""
        if self.mode != "auto" or reply_bytes < self.min_sample_bytes:
            return
        transfer = max(wall_seconds - class_cpu_seconds, MIN_TRANSFER_SECONDS)
        rate = reply_bytes / transfer * max(1, in_flight)
        with self._lock:
            old = self._rate.get(osd)
            rate = rate if old is None else WEIGHT * rate + (1 - WEIGHT) * old
            self._rate[osd] = rate
            if rate < SLOW_BYTES_PER_S:
                self._compressing[osd] = True
            elif rate > FAST_BYTES_PER_S:
                self._compressing[osd] = False

    def rates(self) -> dict:
        """OSD -> the averaged reply rate in bytes/s (for reports and tests)."""
        with self._lock:
            return dict(self._rate)
