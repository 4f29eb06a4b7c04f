"""Finished request statuses kept in the pool, so that they outlive the coordinator.

Each finished request is one object ``request.<hash of its id>`` holding its status as
JSON (``RequestStatus.as_dict()``), written in one atomic write_full; the omap of
``request._history`` maps each id to its end time, so that the oldest can be removed
beyond ``history`` entries.  Only a coordinator with a writer identity (the ingest
key: read and write in the namespace) persists; the query key cannot read these
objects (its caps name the ``part.`` and ``manifest`` prefixes only), which is why the
coordinator reads them with the same writer identity.

Writes go through one background thread (a query never waits for them); a failed
write is logged and the status stays in memory.  A request that was running when the
coordinator stopped was never finished, so it is not here (NOT_FOUND after a restart).
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading

log = logging.getLogger("skyhook.requests")

HISTORY_OBJECT = "request._history"


def request_object(request_id: str) -> str:
    return "request." + hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class PersistedRequests:
    """save(status_dict) in the background; load(request_id) -> dict or None."""

    def __init__(self, store, history: int = 1000, trim_every: int = 100):
        self.store, self.history, self.trim_every = store, history, trim_every
        self._q: queue.Queue = queue.Queue(maxsize=10_000)
        self._saved = 0
        self._thread = threading.Thread(target=self._work, name="skyhook-requests", daemon=True)
        self._thread.start()

    def save(self, status: dict):
        try:
            self._q.put_nowait(status)
        except queue.Full:
            log.warning("request history: too many statuses waiting to be written; %s kept in memory only",
                        status.get("request_id"))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every status handed to ``save`` is written (tests, shutdown)."""
        done = threading.Event()
        self._q.put(done)
        return done.wait(timeout)

    def load(self, request_id: str) -> dict | None:
        try:
            data = self.store.read(request_object(request_id))
        except FileNotFoundError:
            return None
        d = json.loads(data)
        return d if d.get("request_id") == request_id else None   # a hash collision: not ours

    def _work(self):
        while True:
            item = self._q.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._write(item)
            except Exception as e:  # noqa: BLE001 - the status stays in memory; say so
                log.warning("request history: could not write the status of %s: %s", item.get("request_id"), e)

    def _write(self, d: dict):
        rid = d["request_id"]
        self.store.write_full(request_object(rid), json.dumps(d, default=str).encode())
        self.store.set_omap(HISTORY_OBJECT, {rid: repr(d.get("ended") or 0.0).encode()})
        self._saved += 1
        if self._saved % self.trim_every == 0:
            self._trim()

    def _trim(self):
        entries = self.store.get_omap(HISTORY_OBJECT)
        if len(entries) <= self.history:
            return
        oldest = sorted(entries, key=lambda k: float(entries[k] or b"0"))[:len(entries) - self.history]
        for rid in oldest:
            try:
                self.store.remove(request_object(rid))
            except FileNotFoundError:
                pass
        self.store.set_omap(HISTORY_OBJECT, {}, remove_keys=oldest)
