"""A small progress bar on stderr for long operations: files, events, MB/s.

Silent when stderr is not a terminal, unless asked (``enabled=True``); thread-safe,
redraws at most ten times a second.  It knows nothing of what is being counted.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, what: str, total_files: int = 0, total_events: int = 0,
                 enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.what = what
        self.total_files, self.total_events = total_files, total_events
        self.files = self.events = self.bytes = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, files: int = 0, events: int = 0, bytes: int = 0):
        with self._lock:
            self.files += files
            self.events += events
            self.bytes += bytes
            now = time.monotonic()
            if self.enabled and (now - self._last >= 0.1 or files):
                self._last = now
                self._draw(now)

    def rate_mb_s(self) -> float:
        return self.bytes / 1e6 / max(1e-9, time.monotonic() - self._start)

    def _draw(self, now, end="\r"):
        frac = self.events / self.total_events if self.total_events else 1.0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"{self.what} [{bar}] files {self.files}/{self.total_files} "
                f"events {self.events:,}/{self.total_events:,} {self.rate_mb_s():.1f} MB/s")
        self.stream.write("\x1b[2K" + line + end if end == "\r" else line + end)
        self.stream.flush()

    def close(self):
        if self.enabled:
            with self._lock:
                self._draw(time.monotonic(), end="\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
