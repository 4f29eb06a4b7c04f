"""A throwaway Ceph cluster on this machine: one mon and N bluestore-on-file OSDs,
either all on 127.0.0.1 (the default) or spread over storage hosts that are network
namespaces joined by rate-shaped links (``hosts=``; the plumbing is in ``netns``).

This layer creates, starts, inspects and stops the local cluster that the demo,
the tests and the benchmarks run against.  Everything lives in one folder (the
cluster dir): ceph.conf, keyrings, mon and OSD data, logs, pid files, admin
sockets and a private object-class folder.  It drives Ceph only through its
command-line tools (``ceph``, ``rados``, ``ceph-mon``, ``ceph-osd``...), each
call under a timeout; the one exception is the class probe in ``status``, which
goes through ``rados_io`` like every other librados call.

With hosts, the mon runs on the first host, each OSD on its host with
``crush location = root=default host=<name>``, so a 3-copy pool keeps its copies on 3
hosts (failure domain ``host``); the client (CLI, tests, benchmark, coordinator) stays
in the root namespace and reaches every host over its link.  ``kill_host``,
``stop_host``, ``partition_host`` and ``heal_host`` cause host failures for tests.

It deliberately ignores what a real deployment needs (real machines, a mgr,
dashboards, upgrades): see deploy/README.md for ceph-ansible.

The command line (``skyhook cluster ...``, ``python -m skyhook_py.cluster``) lives in
``cluster_cli``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import defaults, netns
from .errors import ClusterError
from .paths import class_library, default_cluster_dir
from .storage.caps import ingest_caps, pool_tag, query_caps

log = logging.getLogger("skyhook.cluster")

POOL = defaults.POOL
NAMESPACE = defaults.NAMESPACE
QUERY_USER = defaults.QUERY_USER
INGEST_USER = defaults.INGEST_USER
ADMIN_USER = "client.admin"
MON_ID = "a"
DEFAULT_PG_NUM = 32
TEST_PG_NUM = 8
# BlueStore's cache per OSD (fixed: see the [osd] section written by _write_conf); the
# OSD's memory target is this plus 512 MiB
OSD_CACHE_BYTES = 512 * 2**20

# Timeouts (seconds).  Every Ceph command runs under one: a command that waits for a
# mon that is gone would otherwise block forever.
CONNECT_TIMEOUT = 10
COMMAND_TIMEOUT = 60
DAEMON_START_TIMEOUT = 120
READY_TIMEOUT = 90
STOP_TIMEOUT = 20

# Ports are pinned in ceph.conf so that two clusters (demo and tests) never collide.
# Chosen below Linux's ephemeral range (32768-60999), where outgoing connections take theirs.
_PORT_LOW, _PORT_HIGH = 10000, 32000

_CEPH_CLASS_DIR_FALLBACK = "/usr/lib/x86_64-linux-gnu/rados-classes"
_REQUIRED_TOOLS = ("ceph", "rados", "ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool")


def missing_tools() -> list[str]:
    """The Ceph executables this module needs that are not on $PATH."""
    return [t for t in _REQUIRED_TOOLS if shutil.which(t) is None]


# ---------------------------------------------------------------------------------
# small process helpers


def _run(cmd: list[str], timeout: float = COMMAND_TIMEOUT, stdin: bytes | None = None,
         log_to: Path | None = None) -> str:
    """Run a command; return its stdout; raise ClusterError naming the command on failure."""
    try:
        if log_to is not None:
            # daemons fork and keep inherited fds: never give them our pipes
            with open(log_to, "ab") as out:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                      timeout=timeout, start_new_session=True)
            if proc.returncode != 0:
                tail = log_to.read_text(errors="replace")[-2000:]
                raise ClusterError(f"{' '.join(cmd)} failed (exit {proc.returncode}); "
                                   f"end of {log_to}:\n{tail}")
            return ""
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(cmd)} did not finish within {timeout} s") from e
    except FileNotFoundError as e:
        raise ClusterError(f"{cmd[0]} is not installed (run `make setup`)") from e
    if proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace").strip()
        raise ClusterError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {err[-2000:]}")
    return proc.stdout.decode(errors="replace")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> int:
    """The first port of ``count`` consecutive free ports on 127.0.0.1."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(_PORT_LOW, _PORT_HIGH - count)
        if all(_port_free(p) for p in range(base, base + count)):
            return base
    raise ClusterError(f"found no {count} consecutive free ports in {_PORT_LOW}-{_PORT_HIGH}")


def _ceph_class_dir() -> Path:
    try:
        out = _run(["ceph-osd", "-c", "/dev/null", "--show-config-value", "osd_class_dir"], timeout=20)
        return Path(out.strip())
    except ClusterError:
        return Path(_CEPH_CLASS_DIR_FALLBACK)


def _ceph_default_class_list() -> str:
    """Ceph's own default `osd class default list` (the classes any `x` cap may call)."""
    out = _run(["ceph-osd", "-c", "/dev/null", "--show-config-value", "osd_class_default_list"],
               timeout=20)
    names = out.split()
    if "skyhook" in names:  # never: our class is reached through explicit caps only
        names.remove("skyhook")
    return " ".join(names)


# ---------------------------------------------------------------------------------


class Cluster:
    """The local cluster in ``dir`` (default: paths.default_cluster_dir()).

    ``up(osds)`` creates or restarts it, ``down()`` stops the daemons it started;
    the data stays until ``purge()``.
    """

    def __init__(self, dir: str | os.PathLike | None = None, osd_cache_bytes: int | None = None):
        """``osd_cache_bytes``: BlueStore's cache per OSD, fixed at creation (default
        OSD_CACHE_BYTES; the benchmarks give it room for their datasets, as the other
        systems they compare with have the host's page cache)."""
        self.dir = Path(dir).expanduser().resolve() if dir else default_cluster_dir().resolve()
        self.osd_cache_bytes = osd_cache_bytes
        self.conf_path = self.dir / "ceph.conf"
        self.keys_dir = self.dir / "keys"
        self.run_dir = self.dir / "run"
        self.log_dir = self.dir / "log"
        self.class_dir = self.dir / "classes"
        self._state_path = self.dir / "state.json"

    def __repr__(self):
        return f"Cluster({str(self.dir)!r})"

    # -- paths ---------------------------------------------------------------------
    def keyring(self, name: str) -> Path:
        """The keyring of cephx user ``name`` (e.g. ``client.skyhook-query``)."""
        return self.keys_dir / f"{name}.keyring"

    @property
    def admin_keyring(self) -> Path:
        return self.keyring(ADMIN_USER)

    @property
    def query_keyring(self) -> Path:
        return self.keyring(QUERY_USER)

    @property
    def ingest_keyring(self) -> Path:
        return self.keyring(INGEST_USER)

    def osd_dir(self, i: int) -> Path:
        return self.dir / "osd" / str(i)

    @property
    def mon_dir(self) -> Path:
        return self.dir / "mon" / MON_ID

    # -- persistent state ----------------------------------------------------------
    def _state(self) -> dict:
        try:
            return json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return {}

    def _save_state(self, state: dict):
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(self._state_path)

    @property
    def created(self) -> bool:
        return bool(self._state().get("complete"))

    @property
    def osd_ids(self) -> list[int]:
        return sorted(int(i) for i in self._state().get("osds", {}))

    @property
    def mon_addr(self) -> str | None:
        st = self._state()
        port = st.get("mon_port")
        return f"v2:{self._mon_ip(st)}:{port}" if port else None

    # -- hosts (network namespaces) ------------------------------------------------
    @property
    def network(self) -> "netns.Network | None":
        """The hosts' network, or None for a one-host loopback cluster."""
        st = self._state().get("network")
        return netns.Network.from_state(st) if st else None

    @property
    def hosts(self) -> list[str]:
        """Host names (``host0``...); ``[]`` for a loopback cluster."""
        net = self.network
        return list(net.host_names) if net else []

    def _host_index(self, host) -> int:
        names = self.hosts
        if not names:
            raise ClusterError(f"{self.dir} is a one-host loopback cluster (create it with hosts=)")
        if isinstance(host, int) and 0 <= host < len(names):
            return host
        if host in names:
            return names.index(host)
        raise ClusterError(f"no host {host!r} in {self.dir}; hosts: {names}")

    def host_of_osd(self, i: int) -> str | None:
        h = self._state().get("osds", {}).get(str(i), {}).get("host")
        return None if h is None else self.hosts[h]

    def osds_on_host(self, host) -> list[int]:
        h = self._host_index(host)
        return sorted(int(i) for i, o in self._state().get("osds", {}).items() if o.get("host") == h)

    def host_addr(self, host) -> str:
        return self.network.host_addr(self._host_index(host))

    def _daemons_on_host(self, h: int) -> list[str]:
        names = [f"osd.{i}" for i in self.osds_on_host(h)]
        return ([f"mon.{MON_ID}"] if h == 0 else []) + names

    @staticmethod
    def _mon_ip(state: dict) -> str:
        net = state.get("network")
        return netns.Network.from_state(net).host_addr(0) if net else "127.0.0.1"

    def _exec_prefix(self, kind: str, ident: str) -> list[str]:
        """``ip netns exec <host>`` for a daemon of a multi-host cluster, else nothing."""
        st = self._state()
        if not st.get("network"):
            return []
        net = netns.Network.from_state(st["network"])
        h = 0 if kind == "mon" else st["osds"][str(ident)]["host"]
        return net.exec_prefix(h)

    # -- running Ceph tools against this cluster -----------------------------------
    def ceph(self, *args: str, timeout: float = COMMAND_TIMEOUT, fmt_json: bool = False,
             stdin: bytes | None = None):
        """Run ``ceph ARGS`` as client.admin; parsed JSON if ``fmt_json``."""
        cmd = ["ceph", "-c", str(self.conf_path), "-n", ADMIN_USER, "-k", str(self.admin_keyring),
               "--connect-timeout", str(CONNECT_TIMEOUT), *args]
        if fmt_json:
            cmd += ["-f", "json"]
        out = _run(cmd, timeout=timeout, stdin=stdin)
        return json.loads(out) if fmt_json else out

    def _rados(self, *args: str, timeout: float = 30) -> str:
        return _run(["rados", "-c", str(self.conf_path), "-n", ADMIN_USER, "-k", str(self.admin_keyring),
                     "--client_mount_timeout", "10", "--rados_osd_op_timeout", "10",
                     "--rados_mon_op_timeout", "10", *args], timeout=timeout)

    # -- processes -----------------------------------------------------------------
    def _daemon_pids(self) -> dict[str, int]:
        """Running ceph-mon/ceph-osd processes of THIS cluster: {"mon.a": pid, "osd.0": pid}.

        Found by their command line naming our ceph.conf (pid files may be stale or
        missing after a crash), so we never touch another cluster's daemons.
        """
        conf = str(self.conf_path)
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if not argv or os.path.basename(argv[0]) not in ("ceph-mon", "ceph-osd"):
                continue
            if conf not in argv or "--mkfs" in argv or "-i" not in argv:
                continue
            ident = argv[argv.index("-i") + 1] if argv.index("-i") + 1 < len(argv) else "?"
            kind = "mon" if argv[0].endswith("ceph-mon") else "osd"
            pid = int(entry)
            if _pid_alive(pid):
                found[f"{kind}.{ident}"] = pid
        return found

    def _start_daemon(self, kind: str, ident: str):
        exe = "ceph-mon" if kind == "mon" else "ceph-osd"
        # ceph daemons fork and the parent returns once the child has initialised
        _run([*self._exec_prefix(kind, ident), exe, "-c", str(self.conf_path), "-i", ident],
             timeout=DAEMON_START_TIMEOUT,
             log_to=self.log_dir / f"{kind}.{ident}.stdout")

    def _stop(self, names: list[str], sig=signal.SIGTERM, timeout: float = STOP_TIMEOUT):
        """Signal the named daemons of this cluster, wait for them to exit, SIGKILL stragglers."""
        pids = {n: p for n, p in self._daemon_pids().items() if n in names}
        for pid in pids.values():
            try:
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)  # a SIGSTOPped daemon must run to exit
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids.values()):
            time.sleep(0.1)
        for name, pid in pids.items():
            if _pid_alive(pid):
                log.warning("%s (pid %d) ignored %s for %d s; killing it", name, pid, sig.name, timeout)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids.values()):
            time.sleep(0.05)
        for name in names:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)

    def running(self) -> bool:
        """True when the mon and every OSD of this cluster have a live process."""
        pids = self._daemon_pids()
        return f"mon.{MON_ID}" in pids and all(f"osd.{i}" in pids for i in self.osd_ids)

    # -- creation ------------------------------------------------------------------
    def _write_conf(self, state: dict):
        d = self.dir
        net = netns.Network.from_state(state["network"]) if state.get("network") else None
        if net is None:
            where = "public addr = 127.0.0.1\ncluster addr = 127.0.0.1"
            failure_domain = """# one host: OSDs must be able to report each other down (default: per host)
mon osd reporter subtree level = osd
osd crush chooseleaf type = 0
osd pool default size = 1"""
        else:
            where = f"""# hosts are network namespaces on {net.subnet} (skyhook_py.netns); each daemon
# binds the one address of its namespace in this network; the client is {net.client_addr}
public network = {net.subnet}
cluster network = {net.subnet}"""
            if net.hosts >= 2:
                # reporters must sit on other hosts; with 2 hosts there is only one other
                layout = f"""# {net.hosts} hosts: a down report needs reporters on {min(2, net.hosts - 1)} other host(s);
# copies on different hosts (CRUSH failure domain host)
mon osd reporter subtree level = host
mon osd min down reporters = {min(2, net.hosts - 1)}
osd crush chooseleaf type = 1"""
            else:
                layout = """# 1 host: OSDs report each other; copies on different OSDs
mon osd reporter subtree level = osd
osd crush chooseleaf type = 0"""
            failure_domain = f"""{layout}
osd pool default size = {min(3, net.hosts)}
# notice a lost host within seconds, not 20 s (a partition stalls queries until then)
osd heartbeat interval = 1
osd heartbeat grace = 5
mon osd adjust heartbeat grace = false
osd mon report interval = 1
# 3 copies of every PG on each OSD: radosgw's pools need room (pool creation answers ERANGE)
mon max pg per osd = 1000"""
        cache = state.get("osd_cache_bytes", OSD_CACHE_BYTES)
        text = f"""# Written by skyhook_py.cluster for a throwaway local cluster; see deploy/README.md.
[global]
fsid = {state['fsid']}
mon host = v2:{self._mon_ip(state)}:{state['mon_port']}
mon initial members = {MON_ID}
{where}
# ports pinned at creation, so that two local clusters never collide
ms bind msgr1 = false
ms bind port min = {state['port_min']}
ms bind port max = {state['port_max']}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {d}/run
crash dir = {d}/crash
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
{failure_domain}
osd pool default min size = 1
osd pool default pg autoscale mode = off

[mon]
mon data = {d}/mon/$id
mon cluster log file = {d}/log/cluster.log
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
# commit map changes every 0.1 s instead of 1 s: each pool/OSD step waits for one
paxos propose interval = 0.1
paxos min wait = 0.01

[osd]
osd data = {d}/osd/$id
keyring = {d}/osd/$id/keyring
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
pid file = {d}/run/$name.pid
osd objectstore = bluestore
bluestore block create = true
# 4 GiB sparse files: blocks are allocated only when written
bluestore block size = 4294967296
osd memory target = {cache + 512 * 2**20}
# Debian's ceph-osd is built without tcmalloc, so the cache autotuner cannot see the heap
# and leaves BlueStore's caches at osd_memory_cache_min: 64 MiB for data, 19 MB held in
# practice, so a 60 MB scanned working set was read from the block file (and its checksums
# verified) on every query.  A fixed cache, mostly for data, keeps it warm.
bluestore cache autotune = false
bluestore cache size = {cache}
bluestore cache meta ratio = 0.1
bluestore cache kv ratio = 0.1
# Cached object data is kept in pieces of at most one blob: with the default 64 KiB
# blobs (a file looks rotational), a column's 200 KB range came back in several
# pieces that the class had to copy into one buffer; 4 MiB blobs give one piece.
bluestore max blob size = 4194304
bluestore fsck on mkfs = false
# a file looks rotational, which means 5 shards; fewer threads suit a small test host
osd op num shards = 2
osd op num threads per shard = 2
# read at OSD start only (ceph config set has no effect): a stuck op thread marks the
# OSD unhealthy after 30 s and aborts it after 90 s; the class's own budget is 10 s
osd op thread timeout = 30
osd op thread suicide timeout = 90
# a private class folder: links to Ceph's classes plus ours (restart-osds reloads it)
osd class dir = {d}/classes
osd class load list = *
# Ceph's default list only: any key with an `x` cap may call these; skyhook is
# reachable only through explicit `class skyhook <method>` caps
osd class default list = {state['class_default_list']}

[client]
keyring = {d}/keys/$name.keyring
client mount timeout = 15
rados mon op timeout = 30
rados osd op timeout = 30
"""
        if net is not None:
            text += f"\n[mon.{MON_ID}]\npublic addr = {net.host_addr(0)}\n"
            for osd_id, o in sorted(state.get("osds", {}).items(), key=lambda kv: int(kv[0])):
                text += (f"\n[osd.{osd_id}]\n# {net.host_names[o['host']]}: namespace {net.netns(o['host'])}, "
                         f"address {net.host_addr(o['host'])}\n"
                         f"crush location = root=default host={net.host_names[o['host']]}\n")
        self.conf_path.write_text(text)

    def _link_classes(self) -> Path | None:
        """Refresh the private class folder; return our class's path if it is built."""
        self.class_dir.mkdir(parents=True, exist_ok=True)
        for old in self.class_dir.iterdir():
            if old.is_symlink():
                old.unlink()
        ceph_dir = Path(self._state().get("ceph_class_dir") or _CEPH_CLASS_DIR_FALLBACK)
        for lib in sorted(ceph_dir.glob("libcls_*.so")):
            if lib.name != "libcls_skyhook.so":
                (self.class_dir / lib.name).symlink_to(lib)
        ours = class_library()
        if ours.is_file():
            # a dangling link would stop the OSD's start-up loading of the other classes
            (self.class_dir / "libcls_skyhook.so").symlink_to(ours.resolve())
            return ours
        return None

    def _create(self, osds: int, hosts: int | None = None, link: str | None = None):
        if self.dir.exists() and any(self.dir.iterdir()):
            state = self._state()
            if not state or state.get("complete"):
                raise ClusterError(f"{self.dir} is not empty and holds no skyhook cluster; "
                                   "choose another --dir")
            log.info("removing the half-created cluster in %s", self.dir)
            self._stop(list(self._daemon_pids()), signal.SIGKILL, 5)
            shutil.rmtree(self.dir)
        for sub in ("keys", "run", "log", "crash", "mon", "osd", "classes"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        nports = max(64, 16 * osds)  # each OSD binds 4 ports (msgr2 only); slack for restarts
        base = _pick_ports(nports + 1)
        state = {
            "complete": False, "fsid": str(uuid.uuid4()), "mon_port": base,
            "port_min": base + 1, "port_max": base + nports, "osds": {},
            "ceph_class_dir": str(_ceph_class_dir()),
            "class_default_list": _ceph_default_class_list(),
            "osd_cache_bytes": self.osd_cache_bytes or OSD_CACHE_BYTES,
        }
        if hosts:
            key = str(self.dir)
            net = netns.Network(netns.prefix_for(key), netns.pick_subnet(key), hosts, link)
            state["network"] = net.to_state()
            self._save_state(state)
            net.create()
        self._save_state(state)
        self._write_conf(state)

        mon_kr = self.keys_dir / "mon.keyring"
        _run(["ceph-authtool", "--create-keyring", str(mon_kr), "--gen-key", "-n", "mon.",
              "--cap", "mon", "allow *"])
        _run(["ceph-authtool", "--create-keyring", str(self.admin_keyring), "--gen-key", "-n", ADMIN_USER,
              "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"])
        _run(["ceph-authtool", str(mon_kr), "--import-keyring", str(self.admin_keyring)])
        monmap = self.dir / "monmap"
        _run(["monmaptool", "--create", "--addv", MON_ID, f"[v2:{self._mon_ip(state)}:{base}]",
              "--fsid", state["fsid"], str(monmap)])
        _run(["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", MON_ID, "--monmap", str(monmap),
              "--keyring", str(mon_kr)], log_to=self.log_dir / "mkfs.mon.stdout")
        self._link_classes()
        self._start_daemon("mon", MON_ID)
        self._wait_mon()
        self._add_osds(osds)
        self._wait_osds_up()
        self.create_pool(POOL, pg_num=DEFAULT_PG_NUM, size=min(3, hosts) if hosts else None)
        for user, caps in ((QUERY_USER, query_caps()), (INGEST_USER, ingest_caps())):
            args = [a for kind, cap in caps.items() for a in (kind, cap)]
            self.ceph("auth", "get-or-create", user, *args, "-o", str(self.keyring(user)))
        state = self._state()
        state["complete"] = True
        self._save_state(state)

    def _add_osds(self, count: int):
        """Create OSDs until there are ``count``: register, mkfs (in parallel), start."""
        state = self._state()
        new = []
        for _ in range(count - len(state["osds"])):
            osd_uuid = str(uuid.uuid4())
            key = _run(["ceph-authtool", "--gen-print-key"]).strip()
            secret = json.dumps({"cephx_secret": key}).encode()
            osd_id = int(self.ceph("osd", "new", osd_uuid, "-i", "-", stdin=secret).strip())
            self.osd_dir(osd_id).mkdir(parents=True, exist_ok=True)
            _run(["ceph-authtool", "--create-keyring", str(self.osd_dir(osd_id) / "keyring"),
                  "--name", f"osd.{osd_id}", "--add-key", key])
            entry = {"uuid": osd_uuid}
            if state.get("network"):  # round robin over the hosts
                entry["host"] = len(state["osds"]) % state["network"]["hosts"]
            state["osds"][str(osd_id)] = entry
            self._save_state(state)
            new.append((osd_id, osd_uuid))
        if state.get("network"):
            self._write_conf(state)  # each OSD's crush location

        def mkfs_and_start(item):
            osd_id, osd_uuid = item
            _run([*self._exec_prefix("osd", osd_id), "ceph-osd", "-c", str(self.conf_path),
                  "-i", str(osd_id), "--mkfs",
                  "--osd-uuid", osd_uuid], timeout=DAEMON_START_TIMEOUT,
                 log_to=self.log_dir / f"mkfs.osd.{osd_id}.stdout")
            self._start_daemon("osd", str(osd_id))

        with ThreadPoolExecutor(max_workers=max(1, min(len(new), 4))) as pool:
            list(pool.map(mkfs_and_start, new))

    # -- waiting -------------------------------------------------------------------
    def _wait_mon(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self.ceph("mon", "stat", timeout=15)
                return
            except ClusterError as e:
                last = e
                time.sleep(0.3)
        raise ClusterError(f"the mon of {self.dir} did not answer within {timeout} s "
                           f"(see {self.log_dir}/mon.{MON_ID}.log): {last}")

    def _osd_map(self) -> dict[int, dict]:
        dump = self.ceph("osd", "dump", fmt_json=True, timeout=20)
        return {o["osd"]: o for o in dump["osds"]}

    def _wait_osds(self, want_up: set[int], want_down: set[int] = frozenset(),
                   timeout: float = READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            osds = self._osd_map()
            up = {i for i, o in osds.items() if o.get("up")}
            if want_up <= up and not (want_down & up):
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"OSDs {sorted(want_up - up)} not up / {sorted(want_down & up)} not down "
                    f"after {timeout} s (logs in {self.log_dir})")
            time.sleep(0.3)

    def _wait_osds_up(self, timeout: float = READY_TIMEOUT):
        self._wait_osds(set(self.osd_ids), timeout=timeout)

    def wait_pool_active(self, name: str, timeout: float = READY_TIMEOUT):
        """Wait until every PG of pool ``name`` serves requests.

        There is no mgr (so no `ceph pg stat`); listing the pool visits every PG and
        succeeds only when all of them are active.
        """
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self._rados("-p", name, "ls", "--all", timeout=20)
                return
            except ClusterError as e:
                last = e
                time.sleep(0.3)
        raise ClusterError(f"pool {name!r} not active after {timeout} s: {last}")

    def wait_settled(self, pool: str | None = None, timeout: float = READY_TIMEOUT):
        """Wait until every OSD is up, no placement is temporary (no pg_temp/primary_temp:
        peering after an OSD came back is over, so an object's primary stays where
        ``osd map`` says) and, if given, pool ``pool`` serves requests.  Tests that pick an OSD by
        the objects it serves call this first."""
        deadline = time.monotonic() + timeout
        while True:
            dump = self.ceph("osd", "dump", fmt_json=True, timeout=20)
            down = [o["osd"] for o in dump["osds"] if not o.get("up")]
            temp = len(dump.get("pg_temp", ())) + len(dump.get("primary_temp", ()))
            if not down and not temp:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster not settled after {timeout} s: OSDs down {down}, "
                                   f"{temp} temporary placements (logs in {self.log_dir})")
            time.sleep(0.3)
        if pool is not None:
            self.wait_pool_active(pool, timeout=max(1.0, deadline - time.monotonic()))

    # -- public lifecycle ----------------------------------------------------------
    def up(self, osds: int = 1, hosts: int | None = None, osds_per_host: int = 1,
           link: str | None = None) -> "Cluster":
        """Create the cluster (or start its stopped daemons) and wait until the pool
        ``skyhook`` serves requests.  A no-op when it is already running.

        ``hosts=N`` makes N storage hosts (network namespaces) with ``osds_per_host``
        OSDs each (``osds`` is then ignored), their links shaped to ``link`` (e.g.
        ``"1gbit"``, ``"10gbit"``; None: unshaped).  Without ``hosts``: one host on
        127.0.0.1.  The layout is fixed at creation, except the link rate.
        """
        if hosts is not None:
            if hosts < 1 or osds_per_host < 1:
                raise ValueError(f"hosts and osds_per_host must be >= 1, not {hosts}, {osds_per_host}")
            osds = hosts * osds_per_host
            netns.parse_rate(link)
        if osds < 1:
            raise ValueError(f"a cluster needs at least one OSD, not {osds}")
        missing = missing_tools()
        if missing:
            raise ClusterError(f"Ceph tools not installed: {', '.join(missing)} (run `make setup`)")
        t0 = time.monotonic()
        if not self.created:
            log.info("creating a cluster with %d OSD(s)%s in %s", osds,
                     f" on {hosts} hosts (links {link or 'unshaped'})" if hosts else "", self.dir)
            self._create(osds, hosts, link)
        else:
            if hosts is not None and hosts != len(self.hosts):
                raise ClusterError(f"{self.dir} has {len(self.hosts) or 'no'} hosts, not {hosts}; "
                                   "the layout is fixed at creation (down --purge first)")
            pids = self._daemon_pids()
            started = False
            net = self.network
            if net is not None:
                if not pids or not net.exists():
                    # after a crash or a `down`: stray daemons and leftovers of our network go first
                    self._stop(list(pids), signal.SIGKILL, 5)
                    pids = {}
                    net.create()
                if hosts is not None and link != net.rate:
                    net.shape(link)
                    self._save_network(net)
            if f"mon.{MON_ID}" not in pids:
                self._link_classes()
                self._start_daemon("mon", MON_ID)
                started = True
            self._wait_mon()
            stopped = [i for i in self.osd_ids if f"osd.{i}" not in pids]
            if stopped:
                self._link_classes()
                with ThreadPoolExecutor(max_workers=min(len(stopped), 4)) as ex:
                    list(ex.map(lambda i: self._start_daemon("osd", str(i)), stopped))
                started = True
            if osds > len(self.osd_ids):
                self._add_osds(osds)
                started = True
            elif osds < len(self.osd_ids):
                log.info("the cluster has %d OSDs already; keeping them", len(self.osd_ids))
            if not started:
                log.info("cluster in %s is running already", self.dir)
                return self
            self._wait_osds_up()
            self.wait_pool_active(POOL)
        log.info("cluster up in %.1f s: conf %s", time.monotonic() - t0, self.conf_path)
        return self

    def down(self, timeout: float = STOP_TIMEOUT):
        """Stop this cluster's daemons (OSDs first, then the mon); keep the data.
        With hosts, also remove every namespace, veth, bridge and qdisc of the cluster."""
        pids = self._daemon_pids()
        self._stop([n for n in pids if n.startswith("osd.")], timeout=timeout)
        self._stop([n for n in pids if n.startswith("mon.")], timeout=timeout)
        st = self._state()
        if st.get("network"):
            netns.Network.from_state(st["network"]).remove()
        log.info("stopped %d daemon(s) of %s", len(pids), self.dir)

    def _save_network(self, net: "netns.Network"):
        st = self._state()
        st["network"] = net.to_state()
        self._save_state(st)

    def set_link(self, rate: str | None):
        """Reshape every link of the running multi-host cluster to ``rate``."""
        net = self.network
        if net is None:
            raise ClusterError(f"{self.dir} is a one-host loopback cluster: no links to shape")
        net.shape(rate)
        self._save_network(net)

    # -- host faults (multi-host clusters) ----------------------------------------
    def kill_host(self, host, wait_down: bool = False, timeout: float = READY_TIMEOUT):
        """SIGKILL every daemon of ``host`` (a power cut); ``heal_host`` restarts them.
        Killing the first host kills the mon too."""
        h = self._host_index(host)
        names = self._daemons_on_host(h)
        pids = self._daemon_pids()
        for n in names:
            if n in pids:
                try:
                    os.kill(pids[n], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_pid_alive(pids[n]) for n in names if n in pids):
            time.sleep(0.05)
        st = self._state()
        st.setdefault("killed_hosts", [])
        if h not in st["killed_hosts"]:
            st["killed_hosts"].append(h)
        self._save_state(st)
        if wait_down and h != 0:
            self._wait_osds(set(), set(self.osds_on_host(h)), timeout=timeout)

    def stop_host(self, host, wait_down: bool = False, timeout: float = READY_TIMEOUT):
        """SIGSTOP every daemon of ``host`` (a hung machine); ``heal_host`` resumes them."""
        h = self._host_index(host)
        pids = self._daemon_pids()
        for n in self._daemons_on_host(h):
            if n in pids:
                os.kill(pids[n], signal.SIGSTOP)
        if wait_down and h != 0:
            self._wait_osds(set(), set(self.osds_on_host(h)), timeout=timeout)

    def partition_host(self, host, wait_down: bool = False, timeout: float = READY_TIMEOUT):
        """Take ``host``'s link down: its daemons keep running, nothing reaches them."""
        h = self._host_index(host)
        self.network.partition(h)
        if wait_down and h != 0:
            self._wait_osds(set(), set(self.osds_on_host(h)), timeout=timeout)

    def heal_host(self, host, wait: bool = True, timeout: float = READY_TIMEOUT):
        """Undo stop/partition/kill of ``host``: link up, SIGCONT, restart what was
        killed; with ``wait``, until its OSDs are up again."""
        h = self._host_index(host)
        self.network.heal(h)
        pids = self._daemon_pids()
        names = self._daemons_on_host(h)
        for n in names:
            if n in pids:
                os.kill(pids[n], signal.SIGCONT)
        missing = [n for n in names if n not in pids]
        if missing:
            self._link_classes()
            for n in sorted(missing, key=lambda n: not n.startswith("mon.")):  # mon first
                kind, ident = n.split(".", 1)
                self._start_daemon(kind, ident)
        st = self._state()
        if h in st.get("killed_hosts", []):
            st["killed_hosts"].remove(h)
            self._save_state(st)
        if wait:
            if f"mon.{MON_ID}" in missing:
                self._wait_mon()
            self._wait_osds(set(self.osds_on_host(h)), timeout=timeout)

    def purge(self):
        """Stop the cluster and delete its folder."""
        self.down()
        if self.dir.exists():
            if not self._state_path.exists():
                raise ClusterError(f"{self.dir} holds no skyhook cluster; not deleting it")
            shutil.rmtree(self.dir)

    # -- OSD control (class reloads, failure tests) --------------------------------
    def kill_osd(self, i: int, sig: signal.Signals = signal.SIGKILL, wait_down: bool = False,
                 timeout: float = READY_TIMEOUT):
        """Send ``sig`` to osd.i: SIGKILL (default, a crash) or SIGTERM wait for the process
        to go; SIGSTOP (a hung OSD) only stops it (``start_osd`` resumes it).  With
        ``wait_down``, also wait until the mon marks it down."""
        if i not in self.osd_ids:
            raise ClusterError(f"no osd.{i} in {self.dir}; OSDs: {self.osd_ids}")
        pid = self._daemon_pids().get(f"osd.{i}")
        if pid is None:
            raise ClusterError(f"osd.{i} of {self.dir} is not running")
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self._stop([f"osd.{i}"], sig=sig, timeout=timeout)
            if wait_down:
                # the process is gone: tell the mon now instead of waiting for the
                # peers' reports (which never come when there are no peers)
                self.ceph("osd", "down", str(i))
        else:
            os.kill(pid, sig)
        if wait_down:
            self._wait_osds(set(), {i}, timeout=timeout)

    def start_osd(self, i: int, wait: bool = True):
        """Start osd.i again (or resume it after SIGSTOP) and wait until the mon sees it up."""
        if i not in self.osd_ids:
            raise ClusterError(f"no osd.{i} in {self.dir}; OSDs: {self.osd_ids}")
        pid = self._daemon_pids().get(f"osd.{i}")
        if pid is None:
            self._link_classes()
            self._start_daemon("osd", str(i))
        else:
            os.kill(pid, signal.SIGCONT)
        if wait:
            self._wait_osds({i})

    def restart_osds(self):
        """Restart every OSD, e.g. to load a new build of the class, and wait for the pool."""
        ids = self.osd_ids
        self._stop([f"osd.{i}" for i in ids])
        self._link_classes()
        with ThreadPoolExecutor(max_workers=max(1, min(len(ids), 4))) as ex:
            list(ex.map(lambda i: self._start_daemon("osd", str(i)), ids))
        self._wait_osds_up()
        self.wait_pool_active(POOL)

    # -- pools ---------------------------------------------------------------------
    def create_pool(self, name: str, size: int | None = None, pg_num: int = TEST_PG_NUM,
                    min_size: int = 1, wait: bool = True):
        """Create a replicated pool of ``size`` copies (default: min(3, number of OSDs),
        or of hosts for a multi-host cluster: one copy per host), tagged with
        ``pool_tag(name)``, which the ingest key's caps match (storage/caps.py)."""
        size = size or min(3, len(self.hosts) or len(self.osd_ids))
        self.ceph("osd", "pool", "create", name, str(pg_num), str(pg_num), "replicated",
                  "--size", str(size))
        if min_size != 1:  # ceph.conf's default min size is 1
            self.ceph("osd", "pool", "set", name, "min_size", str(min_size))
        app, key, value = pool_tag(name)
        self.ceph("osd", "pool", "application", "enable", name, app)
        self.ceph("osd", "pool", "application", "set", name, app, key, value)
        if wait:
            self.wait_pool_active(name)

    def delete_pool(self, name: str):
        self.ceph("osd", "pool", "delete", name, name, "--yes-i-really-really-mean-it")

    def pools(self) -> list[str]:
        return self.ceph("osd", "pool", "ls", timeout=20).split()

    # -- status --------------------------------------------------------------------
    def class_state(self, pool: str = POOL) -> str:
        """'loaded', 'not built', 'not loaded' (the OSDs answer -EOPNOTSUPP: restart
        them), or 'unknown: <cause>'.  Probes skyhook.stats on a missing partition."""
        if not class_library().is_file():
            return "not built"
        from .errors import ObjectClassError
        from .storage.rados_io import Store

        try:
            with Store(str(self.conf_path), pool, NAMESPACE, keyring=str(self.admin_keyring),
                       op_timeout=10) as store:
                store.execute("part.__skyhook_probe__", "skyhook", "stats", b"", max_reply=4096)
        except FileNotFoundError:
            return "loaded"  # the class ran and found no object
        except ObjectClassError as e:
            if e.errno in (errno.ENOENT, errno.EINVAL, errno.ENODATA):
                return "loaded"
            if e.errno == errno.EOPNOTSUPP:
                return "not loaded"
            return f"unknown: {e}"
        except ClusterError as e:
            return f"unknown: {e}"
        return "loaded"

    def status(self) -> dict:
        """What runs and what answers: mon, OSDs, the pool, our class, the paths."""
        net = self.network
        out = {"dir": str(self.dir), "conf": str(self.conf_path), "created": self.created,
               "hosts": ({n: {"address": net.host_addr(h), "netns": net.netns(h),
                              "osds": self.osds_on_host(h), "partitioned": net.partitioned(h)}
                          for h, n in enumerate(net.host_names)} if net else {}),
               "link": (net.rate or "unshaped") if net else "loopback",
               "client_addr": net.client_addr if net else "127.0.0.1",
               "mon": "down", "mon_addr": self.mon_addr, "osds": {}, "osds_up": 0,
               "osds_total": len(self.osd_ids), "pool": None, "class": None,
               "class_lib": str(class_library()),
               "keyrings": {u: str(self.keyring(u)) for u in (ADMIN_USER, QUERY_USER, INGEST_USER)}}
        if not self.created:
            return out
        pids = self._daemon_pids()
        if f"mon.{MON_ID}" not in pids:
            out["osds"] = {i: ("running" if f"osd.{i}" in pids else "stopped") for i in self.osd_ids}
            return out
        try:
            osds = self._osd_map()
        except ClusterError as e:
            out["mon"] = f"not answering: {e}"
            return out
        out["mon"] = "up"
        out["osds"] = {i: ("up" if o.get("up") else "down") for i, o in sorted(osds.items())}
        out["osds_up"] = sum(1 for o in osds.values() if o.get("up"))
        pools = {p["pool_name"]: p for p in self.ceph("osd", "pool", "ls", "detail",
                                                      fmt_json=True, timeout=20)}
        if POOL in pools:
            p = pools[POOL]
            out["pool"] = {"name": POOL, "size": p["size"], "min_size": p["min_size"],
                           "pg_num": p["pg_num"]}
            out["class"] = self.class_state() if out["osds_up"] else "unknown: no OSD up"
        return out


def format_status(st: dict) -> str:
    lines = [f"cluster   {st['dir']}",
             f"conf      {st['conf']}   (export SKYHOOK_CEPH_CONF={st['conf']})"]
    if not st["created"]:
        lines.append("state     not created (run `skyhook cluster up`)")
        return "\n".join(lines)
    lines.append(f"mon       {st['mon']}" + (f" at {st['mon_addr']}" if st["mon"] == "up" else ""))
    osd_list = ", ".join(f"osd.{i} {s}" for i, s in st["osds"].items())
    lines.append(f"osds      {st['osds_up']} up of {st['osds_total']}" + (f" ({osd_list})" if osd_list else ""))
    if st["mon"] == "up":
        p = st["pool"]
        lines.append(f"pool      {p['name']}: size {p['size']}, min_size {p['min_size']}, "
                     f"pg_num {p['pg_num']}" if p else f"pool      {POOL} missing")
        hint = {"not built": " (build it: make build)",
                "not loaded": " (load the build: skyhook cluster restart-osds)"}.get(st["class"], "")
        lines.append(f"class     skyhook {st['class']}{hint}; library {st['class_lib']}")
    for name, hst in st.get("hosts", {}).items():
        lines.append(f"host      {name}: {hst['address']} (netns {hst['netns']}), osds {hst['osds']}"
                     + (" PARTITIONED" if hst["partitioned"] else ""))
    if st.get("hosts"):
        lines.append(f"links     {st['link']} each way (tbf; no delay emulation), client {st['client_addr']}")
    for user, path in st["keyrings"].items():
        lines.append(f"key       {user}: {path}")
    return "\n".join(lines)

