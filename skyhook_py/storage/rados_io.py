"""The one module that talks to librados; nothing else imports ``rados``.

It moves bytes and calls object-class methods, with timeouts always set
(librados waits forever by default) and librados errors turned into
SkyhookErrors.  It knows nothing of datasets, manifests or queries.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import errno
import os
import sys
import threading
import time
import weakref

from .. import defaults
from ..errors import ClusterError, DeadlineExceeded, ObjectClassError

_DEBIAN_RADOS_DIR = "/usr/lib/python3/dist-packages"


def _import_rados():
    """python3-rados is a Debian package, not on PyPI: import it from Debian's folder."""
    try:
        import rados  # noqa: F401
    except ImportError:
        if _DEBIAN_RADOS_DIR not in sys.path:
            # append, so that the venv's own packages win over Debian's
            sys.path.append(_DEBIAN_RADOS_DIR)
        try:
            import rados  # noqa: F401
        except ImportError as e:
            raise ClusterError(
                "python-rados is not importable; install Debian's python3-rados "
                "(make setup does it): " + str(e)
            ) from e
    import rados

    return rados


DEFAULT_OP_TIMEOUT = defaults.OP_TIMEOUT
DRAIN_SLACK = 2.0   # seconds past the op timeout that close() waits for calls in flight

# A deadline (time.monotonic()) that reads without their own obey: code that reads
# through layers that know nothing of deadlines (a manifest's pieces read lazily while
# a query is planned) runs inside ``reads_bounded_by``.
_read_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "skyhook_read_deadline", default=None)


@contextlib.contextmanager
def reads_bounded_by(deadline: float | None):
    """Within the block, Store.read calls without a deadline use ``deadline`` (None: no
    change)."""
    if deadline is None:
        yield
        return
    token = _read_deadline.set(deadline)
    try:
        yield
    finally:
        _read_deadline.reset(token)

_open_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


class _CallbackThreads(threading.local):
    kept = False


_callback_threads = _CallbackThreads()


def _keep_thread_state() -> None:
    """Keep the Python thread state of the librados thread that runs this completion
    callback for its next ones.

    python-rados enters Python from librados's own threads with PyGILState_Ensure, which
    makes a thread state for the call and deletes it after (with its frame stack, an
    mmap and a munmap that interrupts every CPU): about a tenth of a small query's CPU
    went there (perf).  One Ensure that is never released keeps the state, so later
    callbacks of the thread reuse it.  ``threading.local`` lives in the thread state, so
    a new thread (or one whose state was not kept) is seen as such.  The kept states of a
    closed Store's threads stay until the interpreter ends (about 5 kB per Store opened
    and closed, measured): deleting a state whose thread might still call back would
    crash the process."""
    if _callback_threads.kept:
        return
    import ctypes

    ctypes.pythonapi.PyGILState_Ensure()
    _callback_threads.kept = True


@atexit.register
def _close_open_stores():
    """Exiting with asynchronous calls in flight aborted the process ("terminate called
    without an active exception"): librados completed them into a finalising
    interpreter.  Close every open Store first; close() drains its calls."""
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:  # noqa: BLE001 - exiting: nothing left to report to
            pass


class Store:
    """A connection to one pool and namespace.

    conf: path of ceph.conf; name: the cephx user (``client.admin``,
    ``client.skyhook-query``...); keyring: its keyring (else from ceph.conf).
    """

    def __init__(self, conf: str, pool: str, namespace: str = defaults.NAMESPACE,
                 name: str = "client.admin", keyring: str | None = None,
                 op_timeout: float = DEFAULT_OP_TIMEOUT):
        rados = _import_rados()
        self._rados_mod = rados
        conf = os.fspath(conf)
        self.conf, self.pool, self.namespace = conf, pool, namespace
        opts = {
            "rados_osd_op_timeout": str(op_timeout),
            "rados_mon_op_timeout": str(op_timeout),
            "client_mount_timeout": str(min(op_timeout, 15)),
        }
        if keyring:
            opts["keyring"] = keyring
        if not os.path.exists(conf):
            raise ClusterError(f"no Ceph config at {conf!r}; start a cluster with `skyhook cluster up`")
        try:
            self._cluster = rados.Rados(conffile=conf, name=name, conf=opts)
            self._cluster.connect()
        except rados.Error as e:
            raise ClusterError(f"cannot connect to the Ceph cluster of {conf!r} as {name}: {e}") from e
        try:
            self.ioctx = self._cluster.open_ioctx(pool)
        except rados.ObjectNotFound as e:
            self._cluster.shutdown()
            raise ClusterError(f"pool {pool!r} does not exist in the cluster of {conf!r}") from e
        except rados.Error as e:
            self._cluster.shutdown()
            raise ClusterError(f"cannot open pool {pool!r}: {e}") from e
        self.ioctx.set_namespace(namespace)
        self._lock = threading.Lock()
        self.op_timeout = float(op_timeout)
        # asynchronous calls not completed yet: close() waits for them (bounded by the
        # op timeout, after which librados completes every call), so that no completion
        # runs against a shut-down handle; the completions keep their buffers alive
        self._in_flight: dict[int, object] = {}
        self._in_flight_cv = threading.Condition()
        self._next_call = 0
        _open_stores.add(self)

    # -- lifecycle ---------------------------------------------------------------
    def close(self, drain_timeout: float | None = None):
        """Close the pool and the connection, after the calls in flight have completed.

        Waits at most ``drain_timeout`` (default: the op timeout + DRAIN_SLACK; librados
        ends every call within the op timeout).  If calls are still in flight then, the
        handle is left open rather than shut down under them (a crash)."""
        if self._cluster is None:
            return
        if not self.drain(self.op_timeout + DRAIN_SLACK if drain_timeout is None else drain_timeout):
            self._cluster = None   # leak the handle: shutting it down would crash
            _open_stores.discard(self)
            return
        try:
            self.ioctx.close()
        finally:
            self._cluster.shutdown()
            self._cluster = None
            _open_stores.discard(self)

    def in_flight(self) -> int:
        """Asynchronous calls started and not completed yet."""
        with self._in_flight_cv:
            return len(self._in_flight)

    def drain(self, timeout: float) -> bool:
        """Wait until no asynchronous call is in flight (at most ``timeout`` s)."""
        end = time.monotonic() + max(0.0, timeout)
        with self._in_flight_cv:
            while self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._in_flight_cv.wait(left)
        return True

    def _start_call(self) -> int:
        with self._in_flight_cv:
            self._next_call += 1
            self._in_flight[self._next_call] = None
            return self._next_call

    def _keep(self, call: int, completion):
        with self._in_flight_cv:
            if call in self._in_flight:
                self._in_flight[call] = completion

    def _end_call(self, call: int):
        with self._in_flight_cv:
            self._in_flight.pop(call, None)
            self._in_flight_cv.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plain objects -----------------------------------------------------------
    def _call(self, what, fn, *args, **kw):
        rados = self._rados_mod
        call = self._start_call()   # a blocking call in another thread counts too
        try:
            return fn(*args, **kw)
        except rados.ObjectNotFound as e:
            raise FileNotFoundError(errno.ENOENT, f"no object {what!r} in pool {self.pool!r}") from e
        except rados.TimedOut as e:
            raise ClusterError(f"timed out on {what!r} in pool {self.pool!r}") from e
        except rados.Error as e:
            raise ClusterError(f"{what!r} in pool {self.pool!r}: {e}") from e
        finally:
            self._end_call(call)

    def size(self, obj: str) -> int:
        return self._call(obj, self.ioctx.stat, obj)[0]

    def exists(self, obj: str) -> bool:
        try:
            self.size(obj)
            return True
        except FileNotFoundError:
            return False

    def outlives(self, deadline: float | None) -> bool:
        """Whether a plain call (bounded by the op timeout) could outlive ``deadline``."""
        return deadline is not None and deadline - time.monotonic() <= self.op_timeout + DRAIN_SLACK

    def read(self, obj: str, length: int | None = None, offset: int = 0,
             deadline: float | None = None) -> bytes:
        """Read ``length`` bytes (default: to the end).  With ``deadline`` (a
        time.monotonic() value) the read is asynchronous and DeadlineExceeded is raised
        when it has not completed by then (librados's own timeout is fixed per handle)."""
        if deadline is None:
            deadline = _read_deadline.get()
        if self.outlives(deadline):
            # (a later deadline is the op timeout's to enforce: gRPC's "no deadline" is
            # a time_remaining() of ~1e19 s, too large for a wait)
            if length is not None:
                return self._read_by(obj, length, offset, deadline)
            # to the end, without an unbounded stat first: a read longer than the object
            # returns the rest; only one that fills the buffer is read again, larger
            want = 1 << 20
            while True:
                data = self._read_by(obj, want, offset, deadline)
                if len(data) < want:
                    return data
                want *= 4
        if length is None:
            length = self.size(obj) - offset
        if length <= 0:
            return b""
        return self._call(obj, self.ioctx.read, obj, length, offset)

    def _read_by(self, obj: str, length: int, offset: int, deadline: float) -> bytes:
        rados = self._rados_mod
        if deadline - time.monotonic() <= 0:
            raise DeadlineExceeded(f"deadline exceeded before reading {obj!r}")
        done = threading.Event()
        box = {}
        call = self._start_call()

        def complete(completion, data):
            _keep_thread_state()
            try:
                box["rv"] = completion.get_return_value()
                box["data"] = bytes(data or b"") if box["rv"] >= 0 else b""
            finally:
                done.set()
                self._end_call(call)

        try:
            self._keep(call, self.ioctx.aio_read(obj, length, offset, oncomplete=complete))
        except rados.Error as e:
            self._end_call(call)
            raise ClusterError(f"cannot start reading {obj!r} in pool {self.pool!r}: {e}") from e
        if not done.wait(max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded(f"deadline exceeded reading {obj!r} in pool {self.pool!r} "
                                   f"(is an OSD down or stopped?)")
        rv = box["rv"]
        if rv == -errno.ENOENT:
            raise FileNotFoundError(errno.ENOENT, f"no object {obj!r} in pool {self.pool!r}")
        if rv == -errno.ETIMEDOUT:
            raise ClusterError(f"timed out on {obj!r} in pool {self.pool!r}")
        if rv < 0:
            raise ClusterError(f"{obj!r} in pool {self.pool!r}: {os.strerror(-rv)}")
        return box["data"]

    def write_full(self, obj: str, data: bytes, xattrs: dict[str, bytes] | None = None):
        """Write a whole object (and its xattrs) in one atomic operation."""
        rados = self._rados_mod
        with rados.WriteOpCtx() as op:
            op.write_full(bytes(data))
            for k, v in (xattrs or {}).items():
                op.set_xattr(k, bytes(v))
            self._call(obj, self.ioctx.operate_write_op, op, obj)

    def write(self, obj: str, data: bytes, offset: int = 0):
        """Write ``data`` at ``offset`` of ``obj`` (creating it; the rest is kept)."""
        self._call(obj, self.ioctx.write, obj, bytes(data), offset)

    def truncate(self, obj: str, size: int):
        """Set the size of ``obj`` (a longer object reads zeros past its data: a hole)."""
        self._call(obj, self.ioctx.trunc, obj, size)

    def remove(self, obj: str, missing_ok: bool = True):
        try:
            self._call(obj, self.ioctx.remove_object, obj)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def get_xattr(self, obj: str, name: str) -> bytes:
        return self._call(obj, self.ioctx.get_xattr, obj, name)

    def list_objects(self, prefix: str = "") -> list[str]:
        out = []
        for o in self._call("listing", self.ioctx.list_objects):
            if o.key.startswith(prefix):
                out.append(o.key)
        return sorted(out)

    # -- omap (manifests) --------------------------------------------------------
    def get_omap(self, obj: str) -> dict[str, bytes]:
        rados = self._rados_mod
        out = {}
        start = ""
        while True:
            with rados.ReadOpCtx() as op:
                it, _ = self.ioctx.get_omap_vals(op, start, "", 1000)
                self._call(obj, self.ioctx.operate_read_op, op, obj)
                batch = list(it)
            for k, v in batch:
                out[k] = v
            if len(batch) < 1000:
                return out
            start = batch[-1][0]

    def set_omap(self, obj: str, values: dict[str, bytes], remove_keys=()):
        rados = self._rados_mod
        with rados.WriteOpCtx() as op:
            if values:
                self.ioctx.set_omap(op, tuple(values), tuple(bytes(v) for v in values.values()))
            if remove_keys:
                self.ioctx.remove_omap_keys(op, tuple(remove_keys))
            self._call(obj, self.ioctx.operate_write_op, op, obj)

    def get_omap_keys(self, obj: str, keys) -> dict[str, bytes]:
        """The values of ``keys`` (those present) in ``obj``'s omap; FileNotFoundError if
        there is no ``obj``."""
        rados = self._rados_mod
        keys = tuple(keys)
        with rados.ReadOpCtx() as op:
            it, _ = self.ioctx.get_omap_vals_by_keys(op, keys)
            self._call(obj, self.ioctx.operate_read_op, op, obj)
            return {k: v for k, v in it}

    def set_omap_guarded(self, obj: str, key: str, expected: bytes, value: bytes) -> None:
        """Set omap ``key`` of ``obj`` to ``value`` if it is ``expected`` now (b"": absent);
        InterruptedError (nothing applied) if it is not."""
        rados = self._rados_mod
        with rados.WriteOpCtx() as op:
            # python-rados takes the compared value as text
            op.omap_cmp(key, bytes(expected).decode("utf-8", "surrogateescape"), rados.LIBRADOS_CMPXATTR_OP_EQ)
            self.ioctx.set_omap(op, (key,), (bytes(value),))
            try:
                self.ioctx.operate_write_op(op, obj)
            except rados.ObjectNotFound as e:
                raise FileNotFoundError(errno.ENOENT, f"no object {obj!r} in pool {self.pool!r}") from e
            except rados.Error as e:
                if abs(getattr(e, "errno", 0) or 0) == errno.ECANCELED:
                    raise InterruptedError(errno.ECANCELED, f"{obj!r} key {key!r} changed under us") from e
                raise ClusterError(f"updating {obj!r}: {e}") from e

    def replace_guarded(self, obj: str, data: bytes, version_key: str,
                        expected: str | None, new: str) -> None:
        """Atomically replace ``obj`` if its omap ``version_key`` equals ``expected``.

        ``expected=None`` means the object must not exist yet.  Raises
        FileExistsError (creation raced) or InterruptedError (a stale version):
        in both cases nothing of the operation was applied.
        """
        rados = self._rados_mod
        with rados.WriteOpCtx() as op:
            if expected is None:
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            else:
                op.omap_cmp(version_key, expected, rados.LIBRADOS_CMPXATTR_OP_EQ)
            op.write_full(bytes(data))
            self.ioctx.set_omap(op, (version_key,), (new.encode(),))
            try:
                self.ioctx.operate_write_op(op, obj)
            except rados.ObjectExists as e:
                raise FileExistsError(errno.EEXIST, f"{obj!r} exists already") from e
            except rados.Error as e:
                if abs(getattr(e, "errno", 0) or 0) == errno.ECANCELED:  # omap_cmp failed
                    raise InterruptedError(errno.ECANCELED, f"{obj!r} changed under us") from e
                raise ClusterError(f"committing {obj!r}: {e}") from e

    # -- object classes ----------------------------------------------------------
    def execute(self, obj: str, cls: str, method: str, data: bytes, max_reply: int) -> bytes:
        """Call ``cls.method`` on ``obj``; raise ObjectClassError on a negative errno."""
        rados = self._rados_mod
        try:
            ret, out = self.ioctx.execute(obj, cls, method, bytes(data), length=max_reply)
        except rados.ObjectNotFound as e:
            raise FileNotFoundError(errno.ENOENT, f"no object {obj!r} in pool {self.pool!r}") from e
        except rados.TimedOut as e:
            raise ClusterError(f"timed out calling {cls}.{method} on {obj!r}") from e
        except rados.Error as e:
            code = abs(getattr(e, "errno", 0) or 0) or errno.EIO
            raise ObjectClassError(code, obj, f"{cls}.{method} failed: {os.strerror(code)}") from e
        if ret < 0:
            raise ObjectClassError(-ret, obj, f"{cls}.{method} failed: {os.strerror(-ret)}")
        return bytes(out)

    def aio_execute(self, obj: str, cls: str, method: str, data: bytes, max_reply: int,
                    on_done) -> None:
        """Start ``cls.method`` on ``obj``; ``on_done(errno_or_0, reply_bytes)`` runs in a
        librados thread.  ``max_reply`` must be at least the class's cap on its reply
        (FACTS: a longer reply overflows the buffer)."""

        call = self._start_call()

        def complete(completion, out):
            _keep_thread_state()
            try:
                rv = completion.get_return_value()
                on_done(-rv if rv < 0 else 0, b"" if rv < 0 else bytes(out or b""))
            finally:
                self._end_call(call)

        rados = self._rados_mod
        try:
            self._keep(call, self.ioctx.aio_execute(obj, cls, method, bytes(data), length=max_reply,
                                                    oncomplete=complete))
        except rados.Error as e:
            self._end_call(call)
            raise ClusterError(f"cannot start {cls}.{method} on {obj!r}: {e}") from e

    def osd_for(self, obj: str) -> int | None:
        """The primary OSD of ``obj`` (for per-OSD in-flight caps), or None if unknown."""
        try:
            ret, out, _ = self._cluster.mon_command(
                '{"prefix": "osd map", "pool": "%s", "object": "%s", "nspace": "%s", "format": "json"}'
                % (self.pool, obj, self.namespace), b"", timeout=5)
        except Exception:
            return None
        if ret != 0:
            return None
        import json

        try:
            return int(json.loads(out)["acting_primary"])
        except (ValueError, KeyError):
            return None
