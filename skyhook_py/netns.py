"""Storage hosts as Linux network namespaces on one machine, with rate-shaped links.

This layer only moves packets: it creates, inspects, shapes, cuts and deletes the
network of a multi-host local cluster; it knows nothing about Ceph (cluster.py
starts the daemons inside the namespaces with ``ip netns exec``).

Layout of one cluster's network (``P`` is a prefix derived from the cluster folder,
so two clusters on the machine never share a name; the /24 subnet is derived from it
too and checked against the root namespace's addresses and routes):

    root namespace (the client)           P-sw (a "switch" namespace)        P-h0 .. P-hN
      Pc  10.X.Y.1/24  ===veth===  Pk --+                                  Ph<i> 10.X.Y.(10+i)
                                       +-- bridge Pbr --- Ps<i> ===veth===

Every link goes into the switch namespace, where a bridge joins them; nothing is
routed through the root namespace, so its iptables FORWARD policy (DROP while dockerd
runs) never applies: the client's packets leave and enter the root namespace through
OUTPUT/INPUT only, and host-to-host traffic (replication, heartbeats) never enters it.

Links are shaped with ``tc qdisc ... tbf`` on both ends (both directions) at the rate
asked.  This kernel has no ``netem``: bandwidth can be emulated, delay cannot.

It deliberately ignores IPv6, MTU tuning and anything beyond one machine.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import subprocess
from dataclasses import dataclass, field

from .errors import ClusterError

log = logging.getLogger("skyhook.netns")

COMMAND_TIMEOUT = 20
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(k|m|g)?bit$")


def parse_rate(rate: str | None) -> int | None:
    """``"10gbit"`` -> 10_000_000_000 bits per second; ``None``/``"none"`` -> None."""
    if rate is None or rate in ("", "none"):
        return None
    m = _RATE.match(rate.strip().lower())
    if not m:
        raise ValueError(f"link rate {rate!r} not understood: expected e.g. '1gbit', '10gbit', "
                         "'500mbit' or 'none'")
    scale = {None: 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2)]
    return int(float(m.group(1)) * scale)


def _ip(*args: str, ns: str | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ClusterError(f"{' '.join(cmd)} did not finish within {timeout} s") from e
    except FileNotFoundError as e:
        raise ClusterError(f"{cmd[0]} is not installed (iproute2)") from e
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def prefix_for(key: str) -> str:
    """A short name prefix unique to ``key`` (the cluster folder): 'sk' + 5 hex digits.

    Interface names are limited to 15 characters; the longest we make is prefix + 'h99'.
    """
    return "sk" + hashlib.sha1(key.encode()).hexdigest()[:5]


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("ip", "-4", "-o", "addr", "show").splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m.group(1)).network)
    for line in _ip("ip", "-4", "route", "show", "table", "all").splitlines():
        tok = line.split()[0] if line.split() else ""
        if tok and tok[0].isdigit():
            try:
                nets.append(ipaddress.ip_network(tok, strict=False))
            except ValueError:
                pass
    return nets


def pick_subnet(key: str) -> str:
    """A private /24 for ``key``, in 10.160.0.0/11, not overlapping any address or route
    of the root namespace."""
    h = int(hashlib.sha1(key.encode()).hexdigest(), 16)
    used = _used_networks()
    for k in range(4096):
        idx = (h + k * 7919) % 8192  # 8192 /24s in 10.160.0.0/11
        net = ipaddress.ip_network(f"10.{160 + idx // 256}.{idx % 256}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return str(net)
    raise ClusterError("found no free /24 in 10.160.0.0/11 for the cluster's hosts")


@dataclass
class Network:
    """The namespaces and links of one cluster; every name is derived from ``prefix``."""

    prefix: str
    subnet: str
    hosts: int
    rate: str | None = None          # tbf rate of every link, e.g. "1gbit"; None: unshaped
    host_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.host_names:
            self.host_names = [f"host{i}" for i in range(self.hosts)]
        parse_rate(self.rate)  # validates

    # -- names ----------------------------------------------------------------------
    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    def netns(self, h: int) -> str:
        return f"{self.prefix}-h{h}"

    @property
    def client_if(self) -> str:        # root namespace side of the client link
        return f"{self.prefix}c"

    @property
    def client_peer(self) -> str:      # switch side of the client link
        return f"{self.prefix}k"

    def host_if(self, h: int) -> str:  # inside host h
        return f"{self.prefix}h{h}"

    def switch_if(self, h: int) -> str:  # switch side of host h's link
        return f"{self.prefix}s{h}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    # -- addresses ------------------------------------------------------------------
    def _addr(self, last: int) -> str:
        net = ipaddress.ip_network(self.subnet)
        return str(net.network_address + last)

    @property
    def client_addr(self) -> str:
        return self._addr(1)

    def host_addr(self, h: int) -> str:
        return self._addr(10 + h)

    def to_state(self) -> dict:
        return {"prefix": self.prefix, "subnet": self.subnet, "hosts": self.hosts,
                "rate": self.rate, "host_names": self.host_names}

    @classmethod
    def from_state(cls, st: dict) -> "Network":
        return cls(st["prefix"], st["subnet"], st["hosts"], st.get("rate"), st.get("host_names") or [])

    # -- lifecycle ------------------------------------------------------------------
    def exists(self) -> bool:
        names = set(list_namespaces())
        return self.switch_ns in names and all(self.netns(h) in names for h in range(self.hosts))

    def create(self):
        """Remove leftovers of this prefix, then build the switch, the hosts and the links."""
        remove(self.prefix)
        plen = ipaddress.ip_network(self.subnet).prefixlen
        sw = self.switch_ns
        _ip("ip", "netns", "add", sw)
        _ip("ip", "link", "set", "lo", "up", ns=sw)
        _ip("ip", "link", "add", self.bridge, "type", "bridge", ns=sw)
        # no STP, forward at once
        _ip("ip", "link", "set", self.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0", ns=sw)
        _ip("ip", "link", "set", self.bridge, "up", ns=sw)
        # the client's link: root namespace <-> switch
        _ip("ip", "link", "add", self.client_if, "type", "veth", "peer", "name", self.client_peer)
        _ip("ip", "link", "set", self.client_peer, "netns", sw)
        _ip("ip", "link", "set", self.client_peer, "master", self.bridge, "up", ns=sw)
        _ip("ip", "addr", "add", f"{self.client_addr}/{plen}", "dev", self.client_if)
        _ip("ip", "link", "set", self.client_if, "up")
        for h in range(self.hosts):
            ns = self.netns(h)
            _ip("ip", "netns", "add", ns)
            _ip("ip", "link", "set", "lo", "up", ns=ns)
            _ip("ip", "link", "add", self.host_if(h), "type", "veth", "peer", "name", self.switch_if(h))
            _ip("ip", "link", "set", self.host_if(h), "netns", ns)
            _ip("ip", "link", "set", self.switch_if(h), "netns", sw)
            _ip("ip", "link", "set", self.switch_if(h), "master", self.bridge, "up", ns=sw)
            _ip("ip", "addr", "add", f"{self.host_addr(h)}/{plen}", "dev", self.host_if(h), ns=ns)
            _ip("ip", "link", "set", self.host_if(h), "up", ns=ns)
        self.shape(self.rate)
        log.info("network %s: %d host namespaces on %s, links %s", self.prefix, self.hosts,
                 self.subnet, self.rate or "unshaped")

    def _link_ends(self):
        """(device, namespace) of both ends of every link: client and hosts."""
        yield self.client_if, None
        yield self.client_peer, self.switch_ns
        for h in range(self.hosts):
            yield self.host_if(h), self.netns(h)
            yield self.switch_if(h), self.switch_ns

    def shape(self, rate: str | None):
        """Shape every link in both directions with tbf at ``rate`` (None: remove shaping)."""
        bps = parse_rate(rate)
        for dev, ns in self._link_ends():
            _ip("tc", "qdisc", "del", "dev", dev, "root", ns=ns, check=False)
            if bps is None:
                continue
            # burst: 4 ms at the rate (>= 64 KiB so that one GSO segment fits); queue: 20 ms
            burst = max(64 * 1024, bps // 8 // 250)
            limit = max(burst * 2, bps // 8 // 50)
            _ip("tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", str(bps),
                "burst", str(burst), "limit", str(limit), ns=ns)
        self.rate = rate

    def partition(self, h: int):
        """Cut host h's link (both ends down): its daemons run on, nothing reaches them."""
        _ip("ip", "link", "set", self.switch_if(h), "down", ns=self.switch_ns)
        _ip("ip", "link", "set", self.host_if(h), "down", ns=self.netns(h))

    def heal(self, h: int):
        _ip("ip", "link", "set", self.host_if(h), "up", ns=self.netns(h))
        _ip("ip", "link", "set", self.switch_if(h), "up", ns=self.switch_ns)
        self._reshape_if_missing(h)  # the tbf survives down/up; re-apply only if it is gone

    def _reshape_if_missing(self, h: int):
        if self.rate is None:
            return
        for dev, ns in ((self.host_if(h), self.netns(h)), (self.switch_if(h), self.switch_ns)):
            if "tbf" not in _ip("tc", "qdisc", "show", "dev", dev, ns=ns, check=False):
                self.shape(self.rate)
                return

    def partitioned(self, h: int) -> bool:
        out = _ip("ip", "-br", "link", "show", self.switch_if(h), ns=self.switch_ns, check=False)
        return " DOWN " in f" {out} " or "state DOWN" in out

    def _rx_bytes(self, dev: str, ns: str | None) -> int:
        import json

        out = _ip("ip", "-s", "-j", "link", "show", "dev", dev, ns=ns)
        return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])

    def counters(self) -> dict[str, int]:
        """Bytes sent so far by each host onto its link (``host0``...) and received by
        the client over its link (``client``), read from the veths' counters."""
        out = {name: self._rx_bytes(self.switch_if(h), self.switch_ns)
               for h, name in enumerate(self.host_names)}
        out["client"] = self._rx_bytes(self.client_if, None)
        return out

    def exec_prefix(self, h: int) -> list[str]:
        """The command prefix that runs a program inside host h."""
        return ["ip", "netns", "exec", self.netns(h)]

    def remove(self):
        remove(self.prefix)


def list_namespaces() -> list[str]:
    out = _ip("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove(prefix: str) -> list[str]:
    """Delete every namespace and root-namespace interface named ``prefix...``.

    Deleting a namespace destroys the veth ends in it, their peers, the bridge and every
    qdisc on them; the client's veth in the root namespace is deleted explicitly.
    Returns what was removed.  Safe to call when nothing exists (leftovers of a crash).
    """
    if not re.fullmatch(r"sk[0-9a-f]{5}", prefix):
        raise ValueError(f"refusing to remove interfaces of a foreign prefix {prefix!r}")
    removed = []
    for ns in list_namespaces():
        if ns.startswith(prefix + "-"):
            _ip("ip", "netns", "del", ns, check=False)
            removed.append(ns)
    for line in _ip("ip", "-o", "link", "show", check=False).splitlines():
        m = re.match(r"\d+:\s+([^:@\s]+)", line)
        if m and m.group(1).startswith(prefix):
            _ip("ip", "link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    if removed:
        log.info("removed %s", ", ".join(removed))
    return removed


_RECEIVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    if not b: break
    if t0 is None: t0 = time.monotonic()
    n += len(b)
print(n, time.monotonic() - t0, flush=True)
"""


def measure_rate(net: Network, h: int = 0, nbytes: int = 256 * 1024 * 1024,
                 python: str = "python3") -> float:
    """Send ``nbytes`` over TCP from the root namespace (the client) to host ``h``;
    return the achieved rate in bits per second (measured by the receiver)."""
    import socket
    import sys

    proc = subprocess.Popen([*net.exec_prefix(h), python or sys.executable, "-c", _RECEIVER,
                             net.host_addr(h)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        chunk = b"\0" * (1 << 20)
        with socket.create_connection((net.host_addr(h), port), timeout=30) as s:
            sent = 0
            while sent < nbytes:
                s.sendall(chunk)
                sent += len(chunk)
        n, secs = proc.stdout.readline().split()
        return int(n) * 8 / float(secs)
    finally:
        proc.kill()
        proc.wait()
