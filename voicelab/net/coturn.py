"""Run the reference TURN server, coturn, for ``loopback`` mode.

coturn (Debian package ``coturn``, program ``turnserver``) is what most WebRTC
deployments relay through; the lab starts it on 127.0.0.1 with long-term credentials
(the command in ``shared/design/REFERENCE-FACTS.md``) so calls and tests can go through
a real TURN relay and compare it with :mod:`voicelab.net.turn`.

:class:`Coturn` is an async context manager. It picks free ports
(:func:`voicelab.net.iface.free_port`), starts ``turnserver`` with its own pid file and
user database in a temporary directory (so several instances can run at once), and
waits until the server answers a STUN Binding request on its port (retried with a
growing interval, bounded by ``startup_timeout``); no fixed sleep. On exit it sends
SIGTERM, waits, and kills the process if it lingers. coturn's log is kept in a file
and quoted in the error if it fails to start.

This is an I/O adapter: it imports :mod:`asyncio` and starts a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aioice import stun

from ..errors import ParameterError, ToolUnavailableError, VoicelabError
from .iface import LoopbackInterface, free_port, is_loopback_address
from .stun import UdpEndpointProtocol, binding_request, try_parse

__all__ = ["Coturn", "coturn_command", "COTURN_PACKAGE"]

#: Debian package that provides ``turnserver``.
COTURN_PACKAGE = "coturn"


def coturn_command(
    exe: str,
    *,
    host: str,
    port: int,
    min_port: int,
    max_port: int,
    user: str,
    password: str,
    realm: str,
    workdir: str | os.PathLike,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """The ``turnserver`` argument list for a loopback test server.

    The recipe of REFERENCE-FACTS.md plus ``--no-dtls``, a private ``--pidfile`` and
    ``--userdb`` (coturn's defaults live in /var and would be shared between instances).

    Parameters
    ----------
    exe : str
        Path of ``turnserver``.
    host : str
        Listening and relay address (loopback).
    port : int
        UDP/TCP listening port.
    min_port, max_port : int
        Relay port range.
    user, password, realm : str
        The long-term credential.
    workdir : path
        Directory for the pid file and the user database.
    extra_args : tuple of str, optional
        Appended as given.

    Returns
    -------
    list of str
    """
    workdir = Path(workdir)
    return [
        exe, "-n", "--log-file=stdout", "--simple-log",
        "-L", host, "--relay-ip", host, "-p", str(port),
        f"--min-port={min_port}", f"--max-port={max_port}",
        "--lt-cred-mech", f"--user={user}:{password}", f"--realm={realm}",
        "--fingerprint", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
        f"--pidfile={workdir / 'turnserver.pid'}", f"--userdb={workdir / 'turndb'}",
        *extra_args,
    ]


class Coturn:
    """coturn on loopback, started and stopped as an async context manager.

    Parameters
    ----------
    host : str, optional
        Loopback address to listen and relay on.
    port : int, optional
        Listening port (UDP and TCP); default: a free one.
    min_port, max_port : int, optional
        Relay port range; default: ``relay_ports`` ports from a free one.
    relay_ports : int, optional
        Size of the default relay range.
    user, password, realm : str, optional
        Long-term credential (default ``test`` / ``test`` / ``voicelab``).
    startup_timeout : float, optional
        Seconds to wait for the first STUN answer.
    iface : NetworkInterface, optional
        Used for the readiness probe socket (default: :class:`LoopbackInterface`).
    extra_args : tuple of str, optional
        More ``turnserver`` options.

    Raises
    ------
    ToolUnavailableError
        ``turnserver`` is not installed (the message names the Debian package).
    VoicelabError
        coturn exited or did not answer within ``startup_timeout`` (log quoted).

    Examples
    --------
    ::

        async with Coturn() as turn:
            transport, proto = await aioice.turn.create_turn_endpoint(
                MyProtocol, turn.address, turn.user, turn.password)
            print(turn.url)   # turn:127.0.0.1:40111?transport=udp
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        min_port: int | None = None,
        max_port: int | None = None,
        relay_ports: int = 40,
        user: str = "test",
        password: str = "test",
        realm: str = "voicelab",
        startup_timeout: float = 10.0,
        iface: Any = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if not is_loopback_address(host):
            raise ParameterError(f"Coturn only runs on a loopback address such as '127.0.0.1', got {host!r}")
        for name, value in (("user", user), ("password", password), ("realm", realm)):
            if not isinstance(value, str) or not value or (name == "user" and ":" in value):
                raise ParameterError(f"{name} must be a non-empty string (user without ':'), got {value!r}")
        if not isinstance(relay_ports, int) or relay_ports < 2:
            raise ParameterError(f"relay_ports must be an int >= 2, got {relay_ports!r}")
        if not startup_timeout > 0:
            raise ParameterError(f"startup_timeout must be > 0 seconds, got {startup_timeout!r}")
        self.host = host
        self.port = port
        self.min_port = min_port
        self.max_port = max_port
        self.relay_ports = relay_ports
        self.user = user
        self.password = password
        self.realm = realm
        self.startup_timeout = float(startup_timeout)
        self.iface = iface if iface is not None else LoopbackInterface(host=host)
        self.extra_args = tuple(extra_args)
        self.process: asyncio.subprocess.Process | None = None
        #: Wall time from process start to the first STUN answer (seconds).
        self.startup_s: float | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log = None
        self._last_log = ""

    @property
    def address(self) -> tuple[str, int]:
        """The TURN server's ``(host, port)``."""
        if self.port is None:
            raise ParameterError("Coturn.address is only known inside 'async with Coturn()'")
        return (self.host, self.port)

    @property
    def url(self) -> str:
        """``turn:HOST:PORT?transport=udp`` (for an RTCIceServer)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"turn:{host}:{self.address[1]}?transport=udp"

    def ice_server(self) -> dict[str, str]:
        """This server as an RTCIceServer entry (``urls``, ``username``, ``credential``)."""
        return {"urls": self.url, "username": self.user, "credential": self.password}

    def log(self) -> str:
        """What coturn has written to its log so far."""
        if self._tmp is None:
            return self._last_log
        try:
            return (Path(self._tmp.name) / "turnserver.log").read_text(errors="replace")
        except OSError:
            return ""

    async def __aenter__(self) -> "Coturn":
        exe = shutil.which("turnserver")
        if exe is None:
            raise ToolUnavailableError(
                f"coturn's 'turnserver' is not installed: apt-get install {COTURN_PACKAGE} (needed for TURN in loopback mode)"
            )
        if self.port is None:
            self.port = free_port(kind="udp", host=self.host)
        if self.min_port is None or self.max_port is None:
            base = free_port(kind="udp", host=self.host)
            base = min(base, 65535 - self.relay_ports)
            self.min_port, self.max_port = base, base + self.relay_ports
        self._tmp = tempfile.TemporaryDirectory(prefix="voicelab-coturn-")
        cmd = coturn_command(
            exe, host=self.host, port=self.port, min_port=self.min_port, max_port=self.max_port,
            user=self.user, password=self.password, realm=self.realm, workdir=self._tmp.name,
            extra_args=self.extra_args,
        )
        self._log = open(Path(self._tmp.name) / "turnserver.log", "wb")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            self.process = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=asyncio.subprocess.STDOUT
            )
            await self._wait_ready()
        except BaseException:
            await self._stop()
            raise
        self.startup_s = loop.time() - t0
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stop()

    async def _wait_ready(self) -> None:
        """Send STUN Binding requests until one is answered, the process dies, or time is up."""
        loop = asyncio.get_running_loop()
        answered: asyncio.Future = loop.create_future()
        tid = os.urandom(12)

        def on_datagram(data: bytes, addr: Any) -> None:
            msg = try_parse(data)
            if (msg is not None and msg.transaction_id == tid and msg.message_class == stun.Class.RESPONSE
                    and not answered.done()):
                answered.set_result(None)

        proto = UdpEndpointProtocol(on_datagram, loop.create_future())
        transport, _ = await self.iface.create_datagram_endpoint(lambda: proto, local_addr=(self.host, 0))
        assert self.process is not None
        exited = asyncio.ensure_future(self.process.wait())
        deadline = loop.time() + self.startup_timeout
        interval = 0.01
        try:
            while True:
                transport.sendto(binding_request(transaction_id=tid), self.address)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise VoicelabError(
                        f"coturn did not answer STUN on {self.address} within {self.startup_timeout} s; "
                        f"log: {self.log()[-800:]!r}"
                    )
                done, _ = await asyncio.wait({answered, exited}, timeout=min(interval, remaining),
                                             return_when=asyncio.FIRST_COMPLETED)
                if answered in done:
                    return
                if exited in done:
                    raise VoicelabError(
                        f"coturn exited with status {self.process.returncode} before answering; "
                        f"log: {self.log()[-800:]!r}"
                    )
                interval = min(interval * 2, 0.2)
        finally:
            if not exited.done():
                exited.cancel()
                try:
                    await exited
                except asyncio.CancelledError:
                    pass
            transport.close()
            await proto.closed

    async def _stop(self) -> None:
        proc = self.process
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._last_log = self.log()
            self._tmp.cleanup()
            self._tmp = None
