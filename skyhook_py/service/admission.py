"""Per-client admission control and fair scheduling of the coordinator's queries.

One client must not be able to starve the others (issue 12 item 10): a greedy client
sending many queries used to have all of them scanning at once, filling the OSDs'
queues while another client's query waited behind them.

- ``per_client``: at most this many queries of one client are admitted (running or
  waiting); one more is refused at once with AdmissionRefused (RESOURCE_EXHAUSTED).
- ``slots``: at most this many queries execute (scan partitions) at once.  Waiting
  queries get a free slot round-robin by client, not first come first served: a
  client with many queued queries gets one turn, then every other waiting client
  gets one, so another client's query waits for at most one query of each client
  ahead of it in the rotation (plus the ones already running).

A client is what the frontend says it is: the gRPC peer (``ipv4:host:port``) for the
server, i.e. one TCP connection (channels of one process to the same target share a
connection, and so count as one client: hence the generous per-client default).  Cache hits are replayed without a slot (they scan nothing).
The scheduling is per query, not per partition scan: a long query holds its slot to
its end.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

from ..errors import AdmissionRefused, DeadlineExceeded, QueryCancelled

DEFAULT_SLOTS = 8
DEFAULT_PER_CLIENT = 64


@dataclasses.dataclass(eq=False)
class Ticket:
    client: str
    granted: bool = False
    released: bool = False


class Admission:
    def __init__(self, slots: int = DEFAULT_SLOTS, per_client: int = DEFAULT_PER_CLIENT):
        if slots < 1 or per_client < 1:
            raise ValueError(f"slots and per_client must be at least 1, got {slots} and {per_client}")
        self.slots, self.per_client = slots, per_client
        self._cv = threading.Condition()
        self._free = slots
        self._admitted: collections.Counter = collections.Counter()
        self._waiting: dict[str, collections.deque] = {}
        self._turns: collections.deque = collections.deque()   # clients with waiters, in turn
        self.grants: collections.deque = collections.deque(maxlen=1000)   # clients, in grant order

    def admit(self, client: str) -> Ticket:
        """A ticket in the client's queue (granted at once when a slot is free and it is
        the client's turn); AdmissionRefused past ``per_client``."""
        with self._cv:
            if self._admitted[client] >= self.per_client:
                raise AdmissionRefused(f"client {client!r} already has {self._admitted[client]} queries "
                                       f"running or waiting (at most {self.per_client}); retry later")
            self._admitted[client] += 1
            t = Ticket(client)
            if client not in self._waiting:
                self._waiting[client] = collections.deque()
                self._turns.append(client)
            self._waiting[client].append(t)
            self._dispatch()
            return t

    def wait(self, ticket: Ticket, deadline: float | None = None, cancelled=None) -> None:
        """Block until ``ticket`` holds a slot.  ``deadline`` (time.monotonic) passed →
        DeadlineExceeded, ``cancelled()`` true → QueryCancelled; the ticket is given up."""
        with self._cv:
            while not ticket.granted:
                if cancelled is not None and cancelled():
                    self._give_up(ticket)
                    raise QueryCancelled("the query was cancelled while waiting for its turn")
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    self._give_up(ticket)
                    raise DeadlineExceeded("the query's deadline passed while it waited for its turn "
                                           f"({self.slots} queries run at once)")
                self._cv.wait(0.05 if deadline is None else min(0.05, deadline - now))

    def release(self, ticket: Ticket) -> None:
        """The query is done (or never ran): its slot and its place go to the next."""
        with self._cv:
            if ticket.released:
                return
            if ticket.granted:
                ticket.released = True
                self._free += 1
                self._admitted[ticket.client] -= 1
                self._dispatch()
            else:
                self._give_up(ticket)

    def state(self) -> dict:
        with self._cv:
            return {"free": self._free, "admitted": {c: n for c, n in self._admitted.items() if n},
                    "waiting": {c: len(q) for c, q in self._waiting.items()}}

    # -- under the lock ------------------------------------------------------------
    def _give_up(self, ticket: Ticket):
        q = self._waiting.get(ticket.client)
        if q is not None and ticket in q:
            q.remove(ticket)
            if not q:
                del self._waiting[ticket.client]
                self._turns.remove(ticket.client)
        if not ticket.released:
            ticket.released = True
            self._admitted[ticket.client] -= 1
        self._cv.notify_all()

    def _dispatch(self):
        while self._free > 0 and self._turns:
            client = self._turns.popleft()
            q = self._waiting[client]
            t = q.popleft()
            t.granted = True
            self._free -= 1
            self.grants.append(client)
            if q:
                self._turns.append(client)   # its next query waits for everyone else's turn
            else:
                del self._waiting[client]
        self._cv.notify_all()
