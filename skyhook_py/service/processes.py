"""Several coordinator processes behind one port: ``skyhook serve --processes N``.

gRPC Python runs a process's calls under one GIL, so one coordinator process answers at
most about 1,200 cache hits per CPU-second however many cores its host has
(benchmarks/results/2026-12-05-grpc-path: two processes took 949-969 hits/s where one
took 681-757, on a 2-CPU machine whose 32 clients used half the CPU themselves).  N
processes listening on the same port (SO_REUSEPORT: the kernel spreads *connections*
among them) put N cores to work.

Each process is a whole coordinator: its own cluster connection, result cache and
request tracker.  A client's connection stays with one process, so its repeated
queries find that process's cache.  What a client may ask about a query it did not
start on the same connection is answered wherever the query runs: Cancel and
GetRequest that find no such id in their process are forwarded to the others over
their private Unix sockets, in a directory only this user can enter
(server.SkyhookServicer._ask_peers; a forwarded call is not forwarded again).  Health
names the process it reaches ("process 2 of 4") and gives the figures (queries running,
cache entries, bytes, hits, misses) summed over every process that answers it.

The supervisor (the process that called ``serve_processes``) starts the workers one
after the other (the first picks the port when asked for port 0, the others share it)
and returns a ``Processes``.  ``serve_until_signalled`` stops them all on SIGINT or
SIGTERM, and also when one of them dies, then exits non-zero: a service manager
restarts the whole.  A worker ends with its supervisor, even one killed by SIGKILL.

What it ignores: what a coordinator does (server.py, coordinator.py).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import signal
import tempfile
import threading
import time

from ..errors import SkyhookError

START_TIMEOUT = 120.0   # seconds for one worker to connect to the cluster and listen
STOP_TIMEOUT = 10.0     # seconds for a worker to stop gracefully before it is killed


def _die_with_supervisor(supervisor: int):
    """Have the kernel SIGTERM this worker when its supervisor ends, even by SIGKILL:
    no coordinator outlives it on the port (Linux's PR_SET_PDEATHSIG; strictly, when
    the supervisor's thread that started it ends: serve_processes runs in the main one)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:   # it ended before the call above
        os._exit(1)


def _worker(index: int, count: int, host: str, port: int, sockets: str, serve_kw: dict, ready,
            supervisor: int):
    from .server import serve

    _die_with_supervisor(supervisor)

    own = f"unix:{sockets}/{index}.sock"
    peers = [f"unix:{sockets}/{i}.sock" for i in range(count) if i != index]
    try:
        running = serve(f"{host}:{port}", block=False, share_port=True, private_listen=own, peers=peers,
                        label=f"process {index + 1} of {count}", **serve_kw)
    except BaseException as e:  # noqa: BLE001 - the supervisor reports it
        ready.put((index, None, f"{type(e).__name__}: {e}"))
        return
    ready.put((index, running.port, None))
    running.serve_until_signalled()
    if os.getppid() != supervisor:   # it was killed: nobody else removes the sockets
        shutil.rmtree(sockets, ignore_errors=True)


class Processes:
    """Running coordinator processes: ``address`` is host:port with the real port."""

    def __init__(self, procs: list, host: str, port: int, sockets: str):
        self.procs, self.port, self.sockets = procs, port, sockets
        self.address = f"{host}:{port}"
        self._stopped = False

    def alive(self) -> list[int]:
        """The pids of the workers still running."""
        return [p.pid for p in self.procs if p.is_alive()]

    def stop(self, timeout: float = STOP_TIMEOUT):
        """SIGTERM every worker (each stops gracefully: running queries are cancelled),
        kill those still running after ``timeout`` seconds, remove the sockets."""
        if self._stopped:
            return
        self._stopped = True
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join(5)
        shutil.rmtree(self.sockets, ignore_errors=True)

    def serve_until_signalled(self) -> int:
        """Block until SIGINT or SIGTERM (0) or until a worker dies (1); stop them all."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        died = False
        while not stop.wait(1.0):
            if len(self.alive()) < len(self.procs):
                died = True
                break
        self.stop()
        return 1 if died else 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _wait_ready(ready, proc, i: int, count: int):
    """(index, port, error) from worker ``i``, which must not die first."""
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        try:
            return ready.get(timeout=0.5)
        except queue.Empty:
            if not proc.is_alive():
                raise SkyhookError(f"coordinator process {i + 1} of {count} exited while starting "
                                   f"(exit code {proc.exitcode})") from None
    raise SkyhookError(f"coordinator process {i + 1} of {count} did not start within {START_TIMEOUT:.0f} s")


def serve_processes(count: int, listen: str, **serve_kw) -> Processes:
    """Start ``count`` coordinator processes on ``listen`` (port 0: a free one) with
    server.serve's other arguments, and return once every one listens."""
    if count < 1:
        raise SkyhookError(f"--processes must be at least 1, got {count}")
    host, _, port_text = listen.rpartition(":")
    host = host or "127.0.0.1"
    port = int(port_text)
    sockets = tempfile.mkdtemp(prefix="skyhook-serve-")   # mode 0700: this user's only
    ctx = mp.get_context("spawn")   # a fresh interpreter: no librados or gRPC state inherited
    ready = ctx.Queue()
    procs: list = []
    running = Processes(procs, host, port, sockets)
    try:
        for i in range(count):
            p = ctx.Process(target=_worker, args=(i, count, host, port, sockets, serve_kw, ready, os.getpid()),
                            name=f"skyhook-serve-{i}")
            p.start()
            procs.append(p)
            _, got, error = _wait_ready(ready, p, i, count)
            if error:
                raise SkyhookError(f"coordinator process {i + 1} of {count} could not start: {error}")
            port = got   # the first one's, shared by the others
        running.port, running.address = port, f"{host}:{port}"
        return running
    except BaseException:
        running.stop()
        raise

