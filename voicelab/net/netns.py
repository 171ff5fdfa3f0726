"""The ``netns`` backend: a vnet topology built from Linux network namespaces and iptables NAT.

The same description that :meth:`voicelab.net.vnet.VirtualNetwork.from_dict` reads (or a
built :class:`~voicelab.net.vnet.VirtualNetwork`) becomes real kernel objects, so the NAT
models can be checked against netfilter::

    with NetnsNetwork({"routers": {"home": {"nat": "symmetric", "subnet": "192.168.1.0/24",
                                            "wan_address": "198.51.100.10"}},
                       "hosts": {"caller": {"address": "192.168.1.10", "router": "home"},
                                 "stun": {"address": "203.0.113.10"}}}) as net:
        stun = net.udp_probe("stun", 3478)
        caller = net.udp_probe("caller", 5000)
        caller.send(("203.0.113.10", 3478), b"who am i")
        got = stun.recv(timeout=2.0)      # Datagram(src=('198.51.100.10', 61234), ...)

Linux and root only; :func:`netns_unavailable_reason` says why it cannot run here.

How the topology maps onto the kernel
-------------------------------------
- Every **segment** (the internet, and each router's inside) is a Linux bridge ``br0``:
  the internet's lives in its own namespace (``...-internet``, a switch with no address),
  a router's inside bridge lives in the router's namespace and carries its
  ``lan_address``.
- Every **host** is a namespace with one veth ``eth0`` whose peer is a port of its
  segment's bridge. On the internet its address is a ``/32`` with an on-link default
  route (the internet is one flat layer-2 segment, as in vnet); inside a router it has
  the router's prefix and a default route via ``lan_address``.
- Every **router** is a namespace with ``ip_forward=1``, a veth ``wan0`` on its parent
  segment (``wan_address``) and the bridge ``br0`` inside. Subnets of plain (non-NAT)
  routers are routed via their WAN address by every other node of the parent segment.
- Nodes get short interface names (``eth0``, ``wan0``, ``br0``, ``p<i>``); namespaces are
  named ``vl-<pid>-<n>-<node>`` (``n`` counts networks in this process), so runs never
  collide. :meth:`NetnsNetwork.close` (also on an error while building, and at the end
  of a ``with`` block) kills the processes started in them and deletes every namespace,
  which removes the veths and bridges with it. :func:`remove_stale_namespaces` deletes
  those left by a process that was killed.

NAT: what the kernel can express
--------------------------------
A NAT router gets, in its namespace (``iptables``, nf_tables backend)::

    -t nat -A POSTROUTING -o wan0 -j MASQUERADE [--random-fully]
    -A INPUT   -i wan0 -m conntrack --ctstate NEW,INVALID -j DROP
    -A FORWARD -i wan0 -m conntrack --ctstate NEW,INVALID -j DROP

- **Mapping.** ``MASQUERADE`` keeps the internal port when the external tuple is free and
  reuses it for every destination: endpoint-independent mapping with port preservation
  (RFC 4787 4.1 / 4.2.1). ``--random-fully`` draws a new random port for every new
  conntrack entry, i.e. per destination ``(ip, port)``: address-and-port-dependent
  mapping without port preservation.
- **Filtering.** conntrack lets an inbound packet through only when it is the reply
  direction of an existing entry, which is keyed by the remote ``(ip, port)``:
  address-and-port-dependent filtering. Endpoint-independent or address-dependent
  filtering (full cone, restricted cone) and address-dependent mapping are not what
  MASQUERADE does; building them would need DNAT rules per mapping or an out-of-tree
  module, so they are refused (:class:`~voicelab.errors.ParameterError`) before
  anything is created.
- The two ``DROP`` rules (``wan_firewall=True``, the default) are what a home router's
  firewall does. Without them an unsolicited packet to the NAT's own address makes a
  conntrack entry on its way to the (absent) local socket, and that entry then steals
  the port the NAT would have preserved for an outbound flow to the same peer: two
  port-restricted NATs punching at the same moment can then fail on a real kernel. vnet's
  NAT keeps no state for a dropped packet, so the firewall is the faithful setting.
- **Timeouts**: conntrack's ``nf_conntrack_udp_timeout`` and ``..._udp_timeout_stream``
  are set to ``mapping_timeout_s``, ``nf_conntrack_tcp_timeout_established`` to
  ``tcp_timeout_s`` (per namespace). conntrack refreshes an entry in both directions,
  vnet only on outbound packets (RFC 4787 REQ-6 allows both).
- **Hairpinning** is not expressed: MASQUERADE does not loop a packet sent to the NAT's
  own address back inside. It only matters for two endpoints behind the same NAT.
- ``open`` (``translate=False``) is a plain router: forwarding, no rules.

So the presets the kernel expresses are :data:`KERNEL_PRESETS`: ``open``,
``port-restricted-cone`` (MASQUERADE) and ``symmetric`` (MASQUERADE ``--random-fully``).

Links
-----
Link impairments (delay, jitter, loss, bandwidth) are not built: this kind of machine may
lack the ``netem`` qdisc. A description with a non-ideal link is refused unless
``ignore_links=True`` (the links are then ideal veths).

Running things inside
---------------------
:meth:`NetnsNetwork.exec` / :meth:`~NetnsNetwork.popen` / :meth:`~NetnsNetwork.run_python`
run a command with ``ip netns exec``; :meth:`NetnsNetwork.udp_probe` starts a tiny UDP
agent (a Python subprocess holding one bound socket, driven over its stdin/stdout) so
that an experiment can be written in the calling process, the way tests drive
:class:`~voicelab.net.vnet.VirtualNetwork` by hand; :func:`wait_any` waits on several
probes at once. This module is an I/O adapter: it starts processes and reads the
monotonic clock for its timeouts, unlike the sans-IO models of :mod:`voicelab.net`.

Why our own: the kernel does the networking; what is ours is only the translation of a
vnet description into ``ip``/``iptables`` commands and a leak-free lifetime. Tools such
as Mininet do the former for SDN experiments but are a large dependency with their own
topology language.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParameterError, ToolUnavailableError
from .nat import NatConfig
from .vnet import INTERNET, LinkConfig, VirtualNetwork

__all__ = [
    "NetnsNetwork",
    "UdpProbe",
    "Datagram",
    "KERNEL_PRESETS",
    "kernel_nat_rule",
    "netns_unavailable_reason",
    "remove_stale_namespaces",
    "wait_any",
    "NAMESPACE_PREFIX",
]

Addr = tuple[str, int]

#: Start of every namespace name this module creates (``vl-<pid>-<n>-<node>``).
NAMESPACE_PREFIX = "vl-"
#: NAT presets the kernel expresses with stock iptables (see the module docstring).
KERNEL_PRESETS = ("open", "port-restricted-cone", "symmetric")

_CMD_TIMEOUT_S = 20.0
_network_counter = 0
#: Networks started and not yet closed (closed at interpreter exit if still open).
_LIVE: "weakref.WeakSet[NetnsNetwork]" = weakref.WeakSet()


def _close_live() -> None:
    for net in list(_LIVE):
        net.close()


atexit.register(_close_live)


def _seconds(value: Any, what: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{what} must be a number of seconds, got {value!r}") from None
    if t != t:
        raise ParameterError(f"{what} must be a number of seconds, got {value!r}")
    return max(0.0, t)


# ---------------------------------------------------------------------------------------
# What the kernel can express
# ---------------------------------------------------------------------------------------


def kernel_nat_rule(config: NatConfig | str | Mapping[str, Any]) -> str | None:
    """The ``iptables -t nat`` POSTROUTING target that builds a NAT behaviour, or None.

    Parameters
    ----------
    config : NatConfig, str or dict
        A NAT behaviour (a preset name is accepted).

    Returns
    -------
    str or None
        ``"MASQUERADE"`` (endpoint-independent mapping with port preservation),
        ``"MASQUERADE --random-fully"`` (address-and-port-dependent mapping, random
        ports), or None for ``open`` (no translation). Filtering is conntrack's,
        address-and-port-dependent, in both cases.

    Raises
    ------
    ParameterError
        When the kernel cannot express the behaviour (full cone, restricted cone,
        address-dependent mapping, endpoint-independent mapping without port
        preservation, address-and-port-dependent mapping with it), or on an unknown preset.

    Examples
    --------
    >>> kernel_nat_rule("symmetric")
    'MASQUERADE --random-fully'
    >>> kernel_nat_rule("port-restricted-cone")
    'MASQUERADE'
    """
    cfg = NatConfig.coerce(config)
    if not cfg.translate:
        return None
    name = cfg.classic_name or f"{cfg.mapping} mapping / {cfg.filtering} filtering"
    what = f"the kernel (iptables MASQUERADE) cannot express NAT {name!r}"
    if cfg.filtering != "address-and-port-dependent":
        raise ParameterError(
            f"{what}: conntrack filtering is address-and-port-dependent; use one of "
            + ", ".join(repr(p) for p in KERNEL_PRESETS) + " or run it on vnet"
        )
    if cfg.mapping == "endpoint-independent":
        if not cfg.port_preservation:
            raise ParameterError(f"{what}: MASQUERADE keeps endpoint-independent mappings only by preserving the port; "
                                 "set port_preservation=True")
        return "MASQUERADE"
    if cfg.mapping == "address-and-port-dependent":
        if cfg.port_preservation:
            raise ParameterError(f"{what}: --random-fully gives per-destination mappings only with random ports; "
                                 "set port_preservation=False")
        return "MASQUERADE --random-fully"
    raise ParameterError(f"{what}: address-dependent mapping has no iptables target; use one of "
                         + ", ".join(repr(p) for p in KERNEL_PRESETS))


# ---------------------------------------------------------------------------------------
# Can it run here?
# ---------------------------------------------------------------------------------------


def _run(argv: Sequence[str], *, input: bytes | None = None, timeout: float = _CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run one command, capture its output (no check)."""
    return subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout)


def _one_line(data: bytes) -> str:
    text = data.decode(errors="replace").strip().replace("\n", " | ")
    return text[:300] or "no message"


def netns_unavailable_reason() -> str | None:
    """Why the ``netns`` backend cannot run on this machine, or None when it can.

    Checks, in order: Linux, root, ``ip`` (Debian ``iproute2``), ``iptables`` and
    ``iptables-restore`` (Debian ``iptables``), then creates a throw-away namespace and
    loads a ``MASQUERADE --random-fully`` rule into it (kernel support for namespaces,
    nf_tables and NAT), and deletes it again.

    Returns
    -------
    str or None
        A one-line reason naming what to install or change.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network namespaces and iptables need root (run as root, e.g. in CI)"
    if shutil.which("ip") is None:
        return "ip not installed (Debian package iproute2)"
    for exe in ("iptables", "iptables-restore"):
        if shutil.which(exe) is None:
            return f"{exe} not installed (Debian package iptables)"
    name = f"{NAMESPACE_PREFIX}{os.getpid()}-check"
    try:
        r = _run(["ip", "netns", "add", name])
        if r.returncode != 0:
            return f"'ip netns add' does not work here: {_one_line(r.stderr)}"
        rules = b"*nat\n-A POSTROUTING -o lo -j MASQUERADE --random-fully\nCOMMIT\n"
        r = _run(["ip", "netns", "exec", name, "iptables-restore"], input=rules)
        if r.returncode != 0:
            return f"iptables NAT does not work in a namespace (kernel nf_tables/NAT support?): {_one_line(r.stderr)}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run ip/iptables: {exc}"
    finally:
        try:
            _run(["ip", "netns", "del", name])
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None


def _list_namespaces() -> list[str]:
    r = _run(["ip", "netns", "list"])
    return [line.split()[0] for line in r.stdout.decode(errors="replace").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left by voicelab processes that no longer run.

    Only names ``vl-<pid>-...`` whose ``pid`` is not a running process are touched.

    Returns
    -------
    list of str
        The namespaces deleted.
    """
    gone = []
    for name in _list_namespaces():
        m = re.match(rf"{re.escape(NAMESPACE_PREFIX)}(\d+)-", name)
        if m and not _pid_alive(int(m.group(1))):
            if _run(["ip", "netns", "del", name]).returncode == 0:
                gone.append(name)
    return gone


# ---------------------------------------------------------------------------------------
# UDP probes
# ---------------------------------------------------------------------------------------

#: The UDP agent started by :meth:`NetnsNetwork.udp_probe` (run with ``python -c``).
#: Arguments: bind address and port. Protocol, one line each: it prints
#: ``ready IP PORT`` once bound, then ``recv IP PORT HEX`` per datagram and
#: ``error ERRNO`` when a send or receive fails; it reads ``send IP PORT HEX`` and exits
#: at the end of its input.
PROBE_SOURCE = r"""
import os, select, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
out = sys.stdout.buffer
def say(line):
    out.write(line + b"\n")
    out.flush()
ip, port = s.getsockname()
say(b"ready %s %d" % (ip.encode(), port))
buf = b""
while True:
    ready = select.select([0, s], [], [])[0]
    if s in ready:
        try:
            data, src = s.recvfrom(65535)
        except OSError as exc:
            say(b"error %d" % exc.errno)
        else:
            say(b"recv %s %d %s" % (src[0].encode(), src[1], data.hex().encode()))
    if 0 in ready:
        chunk = os.read(0, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.split()
            if len(parts) == 4 and parts[0] == b"send":
                try:
                    s.sendto(bytes.fromhex(parts[3].decode()), (parts[1].decode(), int(parts[2])))
                except OSError as exc:
                    say(b"error %d" % exc.errno)
"""


@dataclass(frozen=True)
class Datagram:
    """A datagram a :class:`UdpProbe` received.

    Attributes
    ----------
    src : (str, int)
        The sender as seen by the probe (after every NAT on the way).
    payload : bytes
    time : float
        When the calling process read it (monotonic clock, seconds).
    """

    src: Addr
    payload: bytes
    time: float


class UdpProbe:
    """One bound UDP socket inside a namespace, driven from the calling process.

    Made by :meth:`NetnsNetwork.udp_probe`; closed with the network (or by :meth:`close`).

    Attributes
    ----------
    host : str
        The host it runs on.
    local : (str, int)
        The bound address.
    errors : list of int
        errno values of sends or receives that failed inside (e.g. ``ENETUNREACH``).
    """

    def __init__(self, host: str, proc: subprocess.Popen, *, timeout: float) -> None:
        self.host = host
        self._proc = proc
        self._buf = b""
        self._lines: list[bytes] = []
        self.errors: list[int] = []
        self._pending: list[Datagram] = []
        line = self._read_line(timeout)
        if line is None or not line.startswith(b"ready "):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5.0)
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
            self.close()
            raise ToolUnavailableError(
                f"UDP probe on host {host!r} did not start: {(err[-1] if err else 'no answer')[:300]}"
            )
        _, ip, port = line.split()
        self.local: Addr = (ip.decode(), int(port))

    def fileno(self) -> int:
        """The pipe to read from (for :func:`select.select`)."""
        return self._proc.stdout.fileno()  # type: ignore[union-attr]

    def _fill(self) -> bool:
        """Read what the pipe holds now (call when it is readable); False at its end."""
        chunk = os.read(self.fileno(), 65536)
        if not chunk:
            return False
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._lines.append(line)
        return True

    def _read_line(self, timeout: float) -> bytes | None:
        # The kernel backend waits on real processes in real namespaces: its timeouts are
        # wall-clock bounds on select(), not protocol time (no sans-IO core lives here).
        deadline = time.monotonic() + timeout
        while not self._lines:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self], [], [], left)[0]:
                return None
            if not self._fill():
                return None
        return self._lines.pop(0)

    def _parse(self) -> None:
        now = time.monotonic()
        while self._lines:
            parts = self._lines.pop(0).split()
            if len(parts) == 4 and parts[0] == b"recv":
                self._pending.append(Datagram((parts[1].decode(), int(parts[2])), bytes.fromhex(parts[3].decode()), now))
            elif len(parts) == 2 and parts[0] == b"error":
                self.errors.append(int(parts[1]))

    def _poll(self) -> bool:
        """Take what arrived without blocking; True when a datagram is waiting."""
        while select.select([self], [], [], 0)[0] and self._fill():
            pass
        self._parse()
        return bool(self._pending)

    def send(self, dst: Addr, payload: bytes) -> None:
        """Send ``payload`` to ``dst`` from the probe's socket (returns at once).

        Raises
        ------
        ParameterError
            On a bad address or payload, or when the probe was closed.
        """
        try:
            ip = str(ipaddress.IPv4Address(dst[0]))
            port = int(dst[1])
        except (ValueError, TypeError, IndexError):
            raise ParameterError(f"destination must be an (IPv4 address, port) tuple, got {dst!r}") from None
        if not 0 < port <= 65535:
            raise ParameterError(f"destination port must be 1..65535, got {port}")
        if not isinstance(payload, (bytes, bytearray)):
            raise ParameterError(f"payload must be bytes, got {type(payload).__name__}")
        if self._proc.poll() is not None or self._proc.stdin is None or self._proc.stdin.closed:
            raise ParameterError(f"UDP probe on host {self.host!r} is closed")
        try:
            self._proc.stdin.write(b"send %s %d %s\n" % (ip.encode(), port, bytes(payload).hex().encode()))
            self._proc.stdin.flush()
        except OSError:
            raise ParameterError(f"UDP probe on host {self.host!r} has stopped: start a new one") from None

    def recv(self, timeout: float) -> Datagram | None:
        """The next datagram, waiting at most ``timeout`` seconds; None if none came."""
        deadline = time.monotonic() + _seconds(timeout, "timeout")
        while not self._poll():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self], [], [], left)[0]:
                return None
        return self._pending.pop(0)

    def close(self) -> None:
        """Stop the probe process (no error if it already stopped)."""
        _stop(self._proc)

    def __repr__(self) -> str:
        return f"UdpProbe({self.host!r}, local={getattr(self, 'local', None)!r})"


def wait_any(probes: Sequence[UdpProbe], timeout: float) -> list[tuple[UdpProbe, Datagram]]:
    """Wait until at least one probe has received a datagram, at most ``timeout`` seconds.

    Returns
    -------
    list of (UdpProbe, Datagram)
        Every datagram waiting when the first arrived (empty on timeout), probe by probe.
    """
    deadline = time.monotonic() + _seconds(timeout, "timeout")
    while True:
        got = [(p, d) for p in probes if p._poll() for d in _drain(p)]
        if got:
            return got
        left = deadline - time.monotonic()
        if left <= 0 or not select.select(list(probes), [], [], left)[0]:
            return []


def _drain(p: UdpProbe) -> list[Datagram]:
    out, p._pending = p._pending, []
    return out


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5.0)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None and not f.closed:
            try:
                f.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]


@dataclass
class _Node:
    name: str
    ns: str
    iface: str  # its interface on its parent segment: eth0 (host) or wan0 (router)
    address: str
    segment: str  # parent segment name
    router: bool


class NetnsNetwork:
    """A vnet topology built from network namespaces, veth pairs, bridges and iptables NAT.

    Nothing is created until :meth:`start` (or entering a ``with`` block); everything is
    deleted by :meth:`close` (or leaving the block, also on an error), including when
    building fails half way.

    Parameters
    ----------
    topology : VirtualNetwork, dict or str
        A built :class:`~voicelab.net.vnet.VirtualNetwork`, its description (what
        :meth:`~voicelab.net.vnet.VirtualNetwork.from_dict` reads) or YAML text / path.
        It is validated by vnet first, so the same topology errors apply.
    ignore_links : bool, optional
        Build non-ideal links as ideal veths instead of refusing them (default False).
    wan_firewall : bool, optional
        Drop unsolicited inbound packets on a NAT's WAN before conntrack keeps them
        (default True; see the module docstring).

    Attributes
    ----------
    namespaces : dict
        Node name (host, router, ``"internet"``) -> namespace name, once started.
    commands : list of list of str
        Every command run to build the topology, in order.

    Raises
    ------
    ParameterError
        On a bad topology (as vnet), a NAT the kernel cannot express
        (:func:`kernel_nat_rule`), or a non-ideal link without ``ignore_links``.

    Examples
    --------
    >>> with NetnsNetwork({"hosts": {"a": {"address": "192.0.2.1"},
    ...                              "b": {"address": "192.0.2.2"}}}) as net:  # doctest: +SKIP
    ...     net.exec("a", ["ping", "-c1", "192.0.2.2"]).returncode
    0
    """

    def __init__(self, topology: Any, *, ignore_links: bool = False, wan_firewall: bool = True) -> None:
        if isinstance(topology, VirtualNetwork):
            vnet = topology
        elif isinstance(topology, Mapping):
            vnet = VirtualNetwork.from_dict(topology)
        elif isinstance(topology, (str, Path)):
            vnet = VirtualNetwork.from_yaml(topology)
        else:
            raise ParameterError(
                f"topology must be a VirtualNetwork, a description dict or YAML, got {type(topology).__name__}"
            )
        self.ignore_links = bool(ignore_links)
        self.wan_firewall = bool(wan_firewall)
        self._vnet = vnet
        self._rules: dict[str, str | None] = {}
        self._nat_cfg: dict[str, NatConfig] = {}
        for name, r in vnet.routers.items():
            if r.nat is not None:
                try:
                    self._rules[name] = kernel_nat_rule(r.nat.config)
                except ParameterError as exc:
                    raise ParameterError(f"router {name!r}: {exc}") from None
                self._nat_cfg[name] = r.nat.config
            else:
                self._rules[name] = None
        if not self.ignore_links:
            ideal = LinkConfig()
            for kind, table in (("host", vnet.hosts), ("router", vnet.routers)):
                for name, obj in table.items():
                    if obj.link != ideal:
                        raise ParameterError(
                            f"{kind} {name!r} has an impaired link, which netns does not build (no netem here): "
                            "pass ignore_links=True to build ideal links instead"
                        )
        global _network_counter
        self._tag = f"{NAMESPACE_PREFIX}{os.getpid()}-{_network_counter}"
        _network_counter += 1
        self.namespaces: dict[str, str] = {}
        self.commands: list[list[str]] = []
        self._created: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._started = False
        self._closed = False
        self.cleanup_errors: list[str] = []

    # --- lifetime -----------------------------------------------------------------------
    def __enter__(self) -> "NetnsNetwork":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> "NetnsNetwork":
        """Create the namespaces, links, addresses, routes and NAT rules.

        Raises
        ------
        ToolUnavailableError
            When this machine cannot build it (see :func:`netns_unavailable_reason`) or a
            command fails; everything made so far is deleted first.
        ParameterError
            When called twice or after :meth:`close`.
        """
        if self._started or self._closed:
            raise ParameterError("a NetnsNetwork is started once: make a new one for another run")
        self._started = True
        _LIVE.add(self)
        reason = _cached_reason()
        if reason is not None:
            self._closed = True
            raise ToolUnavailableError(f"netns backend unavailable: {reason}")
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the processes started inside and delete every namespace (idempotent)."""
        if self._closed and not self._created and not self._procs:
            return
        self._closed = True
        _LIVE.discard(self)
        while self._procs:
            p = self._procs.pop()
            try:
                _stop(p)
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.cleanup_errors.append(f"process {p.pid}: {exc}")
        while self._created:
            ns = self._created.pop()
            try:
                r = _run(["ip", "netns", "del", ns])
                if r.returncode != 0:
                    self.cleanup_errors.append(f"ip netns del {ns}: {_one_line(r.stderr)}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.cleanup_errors.append(f"ip netns del {ns}: {exc}")

    # --- building -----------------------------------------------------------------------
    def _cmd(self, argv: list[str], *, input: bytes | None = None) -> None:
        self.commands.append(list(argv))
        r = _run(argv, input=input)
        if r.returncode != 0:
            raise ToolUnavailableError(f"command {' '.join(argv)!r} failed: {_one_line(r.stderr)}")

    def _ip_batch(self, ns: str, lines: list[str]) -> None:
        if lines:
            self._cmd(["ip", "-n", ns, "-batch", "-"], input=("\n".join(lines) + "\n").encode())

    def _sysctl(self, ns: str, settings: dict[str, Any]) -> None:
        script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in settings.items())
        self._cmd(["ip", "netns", "exec", ns, "sh", "-ec", script])

    def _add_ns(self, node: str) -> str:
        used = set(self.namespaces.values())
        ns = f"{self._tag}-{_safe(node)}"
        i = 1
        while ns in used:
            ns = f"{self._tag}-{_safe(node)}-{i}"
            i += 1
        self._cmd(["ip", "netns", "add", ns])
        self._created.append(ns)
        self.namespaces[node] = ns
        return ns

    def _build(self) -> None:
        vnet = self._vnet
        hosts, routers = vnet.hosts, vnet.routers
        # nodes per segment
        nodes: list[_Node] = []
        for name, r in routers.items():
            nodes.append(_Node(name, "", "wan0", r.wan_address, r.parent, True))
        for name, h in hosts.items():
            nodes.append(_Node(name, "", "eth0", h.address, h.segment, False))
        seg_ns: dict[str, str] = {INTERNET: self._add_ns(INTERNET)}
        for name in routers:
            seg_ns[name] = self._add_ns(name)
        for n in nodes:
            n.ns = seg_ns[n.name] if n.router else self._add_ns(n.name)
        batches: dict[str, list[str]] = {ns: ["link set lo up"] for ns in self.namespaces.values()}
        # segments: a bridge in the owner's namespace
        batches[seg_ns[INTERNET]] += ["link add br0 type bridge", "link set br0 up"]
        for name, r in routers.items():
            batches[seg_ns[name]] += [
                "link add br0 type bridge",
                f"addr add {r.lan_address}/{r.subnet.prefixlen} dev br0",
                "link set br0 up",
            ]
        # links: veth from the node to a port of its segment's bridge
        ports: dict[str, int] = {}
        for n in nodes:
            sns = seg_ns[n.segment]
            port = f"p{ports.setdefault(sns, 0)}"
            ports[sns] += 1
            self._ip_batch(n.ns, batches.pop(n.ns, []) + [f"link add {n.iface} type veth peer name {port} netns {sns}"])
            batches.setdefault(sns, [])
            batches[sns] += [f"link set {port} master br0", f"link set {port} up"]
        for ns, lines in batches.items():
            self._ip_batch(ns, lines)
        # addresses and routes
        for n in nodes:
            lines = [f"link set {n.iface} up"]
            if n.segment == INTERNET:
                lines += [f"addr add {n.address}/32 dev {n.iface}", f"route add default dev {n.iface}"]
            else:
                parent = routers[n.segment]
                lines += [f"addr add {n.address}/{parent.subnet.prefixlen} dev {n.iface}",
                          f"route add default via {parent.lan_address} dev {n.iface}"]
            lines += self._routes_on(n.segment, n.iface, exclude=n.name)
            self._ip_batch(n.ns, lines)
        for name in routers:  # a router reaches routed subnets on its own inside segment too
            self._ip_batch(seg_ns[name], self._routes_on(name, "br0", exclude=None))
        # forwarding and NAT
        for name, r in routers.items():
            ns = seg_ns[name]
            self._sysctl(ns, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.arp_ignore": 1})
            rule = self._rules[name]
            if rule is None:
                continue
            text = ["*nat", f"-A POSTROUTING -o wan0 -j {rule}", "COMMIT"]
            if self.wan_firewall:
                text += ["*filter",
                         "-A INPUT -i wan0 -m conntrack --ctstate NEW,INVALID -j DROP",
                         "-A FORWARD -i wan0 -m conntrack --ctstate NEW,INVALID -j DROP",
                         "COMMIT"]
            self._cmd(["ip", "netns", "exec", ns, "iptables-restore"], input=("\n".join(text) + "\n").encode())
            cfg = self._nat_cfg[name]
            self._sysctl(ns, {
                "net.netfilter.nf_conntrack_udp_timeout": int(round(cfg.mapping_timeout_s)) or 1,
                "net.netfilter.nf_conntrack_udp_timeout_stream": int(round(cfg.mapping_timeout_s)) or 1,
                "net.netfilter.nf_conntrack_tcp_timeout_established": int(round(cfg.tcp_timeout_s)) or 1,
            })

    def _routes_on(self, segment: str, iface: str, *, exclude: str | None) -> list[str]:
        """Routes to the subnets of plain routers attached to ``segment`` (not ``exclude``)."""
        out = []
        for name, r in self._vnet.routers.items():
            if r.parent != segment or r.nat is not None or name == exclude:
                continue
            for net in r.routed_subnets():
                out.append(f"route add {net} via {r.wan_address} dev {iface} onlink")
        return out

    # --- using it -----------------------------------------------------------------------
    @property
    def vnet(self) -> VirtualNetwork:
        """The validated vnet model of the same topology (for side-by-side runs)."""
        return self._vnet

    @property
    def hosts(self) -> dict[str, str]:
        """Host name -> its address."""
        return {name: h.address for name, h in self._vnet.hosts.items()}

    def namespace(self, node: str) -> str:
        """The namespace name of a host or router (or ``"internet"``).

        Raises
        ------
        ParameterError
            Unknown node, or the network is not running.
        """
        self._check_running()
        try:
            return self.namespaces[node]
        except (KeyError, TypeError):
            raise ParameterError(
                f"unknown node {node!r}: nodes are {', '.join(map(repr, self.namespaces))}"
            ) from None

    def _check_running(self) -> None:
        if not self._started or self._closed:
            raise ParameterError("the netns network is not running: use it inside 'with NetnsNetwork(...) as net:'")

    def exec(self, node: str, argv: Sequence[str], *, timeout: float = 30.0,
             input: bytes | None = None) -> subprocess.CompletedProcess:
        """Run a command inside ``node``'s namespace and wait for it.

        Parameters
        ----------
        node : str
            Host or router name.
        argv : sequence of str
            The command.
        timeout : float, optional
            Seconds before it is killed (:class:`subprocess.TimeoutExpired`).
        input : bytes, optional
            Its standard input.

        Returns
        -------
        subprocess.CompletedProcess
            With ``stdout`` and ``stderr`` as bytes; the caller checks ``returncode``.
        """
        ns = self.namespace(node)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True, timeout=timeout)

    def run_python(self, node: str, source: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run Python ``source`` (``python -c``, this interpreter) inside ``node``'s namespace."""
        return self.exec(node, [sys.executable, "-c", source, *map(str, args)], timeout=timeout)

    def popen(self, node: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start a command inside ``node``'s namespace without waiting.

        The process is stopped by :meth:`close` (its stdin is closed, then it is killed
        after 1 s). ``kwargs`` go to :class:`subprocess.Popen`.
        """
        ns = self.namespace(node)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def udp_probe(self, host: str, port: int = 0, *, timeout: float = 10.0) -> UdpProbe:
        """Start a :class:`UdpProbe` bound to ``host``'s address and ``port`` (0: any).

        Raises
        ------
        ParameterError
            Unknown host or bad port.
        ToolUnavailableError
            When the probe does not report itself bound within ``timeout`` seconds (the
            message carries its error, e.g. the port is in use).
        """
        if host not in self._vnet.hosts:
            raise ParameterError(f"unknown host {host!r}: hosts are {', '.join(map(repr, self._vnet.hosts))}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ParameterError(f"port must be an int in 0..65535, got {port!r}")
        proc = self.popen(host, [sys.executable, "-u", "-c", PROBE_SOURCE, self.hosts[host], str(port)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return UdpProbe(host, proc, timeout=timeout)

    def __repr__(self) -> str:
        state = "running" if self._started and not self._closed else ("closed" if self._closed else "not started")
        return f"NetnsNetwork({self._tag!r}, {state}, hosts={sorted(self._vnet.hosts)}, routers={sorted(self._vnet.routers)})"


_reason_cache: list[str | None] = []


def _cached_reason() -> str | None:
    if not _reason_cache:
        _reason_cache.append(netns_unavailable_reason())
    return _reason_cache[0]
