"""A real browser as the lab's WebRTC caller: headless Chromium with a WAV file as microphone.

:func:`launch_chromium` starts Debian's ``chromium`` headless on a page (normally the
signaling server's client page with ``?autostart=1``), feeding a WAV file to
``getUserMedia`` through Chromium's fake capture device, with the flags of
``shared/design/REFERENCE-FACTS.md`` (:data:`CHROMIUM_FLAGS`) plus
``--allow-loopback-in-peer-connection`` (:data:`LAB_FLAGS`: Chromium otherwise gathers
no loopback candidate, and the lab's agent only reaches loopback). It yields a
:class:`ChromiumPage` that reads the page's ``window.voicelab`` state.

How the lab reads the page: the DevTools protocol
-------------------------------------------------
Two ways were possible: the page POSTs its state and ``getStats()`` figures to the
signaling server, or the lab asks the browser. The lab asks, over the Chrome DevTools
Protocol (CDP): Chromium is started with ``--remote-debugging-port=0``, prints
``DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID`` on stderr, and the lab
opens that WebSocket with aiohttp (through a
:class:`~voicelab.net.iface.LoopbackInterface`, so it can only reach 127.0.0.1),
attaches to the page (``Target.attachToTarget`` with ``flatten``) and runs
``Runtime.evaluate``. Why: the page and the signaling server stay as they are (no extra
endpoint that a hostile page could also use), any state can be read at any time
(``window.voicelab.history``, errors, timeline), waiting for a condition is one
evaluate of a promise (no polling from Python), and the browser can be closed cleanly
(``Browser.close``). No new dependency: the protocol is JSON over a WebSocket.

Processes
---------
Chromium starts a dozen helper processes (zygote, renderer, GPU, network and audio
services). It is started in a new session, so all of them share one process group whose
id is the pid the lab started. :meth:`ChromiumPage.close` asks ``Browser.close``, waits
for the process to exit (reaping it), then sends SIGTERM and, if needed, SIGKILL to
that process group only (never to processes found by name), and waits until the group
is empty: no browser and no zombie outlives the context manager.

Measuring a looped file
-----------------------
Chromium's fake capture plays the WAV in a loop with a small extra gap each time (tens
to hundreds of samples), so the received audio is not one continuous copy of the file.
:func:`score_loops` finds each repetition separately in what the agent received and
scores the complete ones with PESQ.

This module is an I/O adapter: it imports :mod:`asyncio` and starts a subprocess.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import numpy as np

from ..errors import AudioError, ParameterError, RemoteProtocolError, ToolUnavailableError, VoicelabError

__all__ = [
    "CHROMIUM_FLAGS",
    "CHROMIUM_PACKAGE",
    "LAB_FLAGS",
    "ChromiumPage",
    "chromium_flags",
    "find_chromium",
    "launch_chromium",
    "score_loops",
]

#: Debian package that provides ``chromium``.
CHROMIUM_PACKAGE = "chromium"

#: Flags from REFERENCE-FACTS.md (headless WebRTC with a WAV file as microphone); the
#: fake-capture file and the profile directory are added by :func:`chromium_flags`.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)

#: Added by the lab: without it Chromium leaves loopback out of its ICE candidates (it
#: offers only the machine's LAN/IPv6 addresses), and the lab's agent, whose network
#: interface reaches only 127.0.0.0/8 and ::1, could not reach the browser.
LAB_FLAGS = ("--allow-loopback-in-peer-connection",)

_DEVTOOLS_LINE = re.compile(r"DevTools listening on (ws://[^\s]+)")


def find_chromium() -> str | None:
    """Path of an installed Chromium (``chromium``, ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_flags(*, wav: str | os.PathLike, user_data_dir: str | os.PathLike,
                   extra_flags: Sequence[str] = ()) -> list[str]:
    """The command-line flags :func:`launch_chromium` uses (without the program and URL).

    Parameters
    ----------
    wav : path
        WAV file played as the microphone (looped by Chromium).
    user_data_dir : path
        A fresh, private profile directory.
    extra_flags : sequence of str
        Appended as given (e.g. ``"--enable-logging=stderr"``).

    Returns
    -------
    list of str
    """
    if isinstance(extra_flags, str) or not all(isinstance(f, str) and f.startswith("--") for f in extra_flags):
        raise ParameterError(f"extra_flags must be a sequence of '--flag' strings, got {extra_flags!r:.100}")
    return [
        *CHROMIUM_FLAGS,
        *LAB_FLAGS,
        f"--use-file-for-fake-audio-capture={os.fspath(wav)}",
        f"--user-data-dir={os.fspath(user_data_dir)}",
        "--remote-debugging-port=0",
        *extra_flags,
    ]


def _check_wav(wav: Any) -> Path:
    try:
        path = Path(os.fspath(wav))
    except TypeError:
        raise ParameterError(f"wav must be a path to a WAV file, got {wav!r:.80}") from None
    if not path.is_file():
        raise ParameterError(f"wav {str(path)!r} does not exist; give a mono 16-bit PCM WAV file")
    with path.open("rb") as f:
        head = f.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(f"{path} is not a RIFF/WAVE file; Chromium's fake capture needs a PCM WAV")
    return path.resolve()


class ChromiumPage:
    """A running headless Chromium and the page it opened (made by :func:`launch_chromium`).

    Attributes
    ----------
    process : asyncio.subprocess.Process
        The browser process (its pid is also the process group of all its helpers).
    flags : list of str
        The command line it was started with (program and URL excluded).
    url : str
        The page it opened.
    devtools_url : str
        The browser's DevTools WebSocket URL.
    console : list of dict
        Console messages and uncaught exceptions of the page (at most 500):
        ``{"type": "log" | "error" | ... | "exception", "text": str}``.
    stderr_tail : collections.deque of str
        The last 200 lines Chromium wrote on stderr (for error messages).
    """

    def __init__(self, process: Any, *, flags: list[str], url: str) -> None:
        self.process = process
        self.flags = flags
        self.url = url
        self.devtools_url = ""
        self.console: list[dict[str, str]] = []
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._session_http: Any = None
        self._ws: Any = None
        self._page_session: str | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._stderr_task: asyncio.Task | None = None
        self._closed = False
        self._fakes: dict[str, tuple[int, bytes, str]] = {}
        self._fake_tasks: set[asyncio.Task] = set()
        self._load_waiters: list[asyncio.Future] = []
        self._page_enabled = False

    @property
    def pid(self) -> int:
        """The browser's pid (= its process group id)."""
        return int(self.process.pid)

    # -- start-up --------------------------------------------------------------------
    async def _start(self, timeout: float) -> None:
        import aiohttp

        from ..net.iface import LoopbackInterface, http_connector

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # stderr: wait for the DevTools line, then keep draining it (a full pipe would block Chromium)
        while True:
            try:
                raw = await asyncio.wait_for(self.process.stderr.readline(), max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ToolUnavailableError(
                    f"Chromium did not open its DevTools port within {timeout:g} s; its stderr ends with: "
                    + " | ".join(list(self.stderr_tail)[-5:])) from None
            except ValueError:  # a line over the stream's limit: not the one we wait for
                continue
            if not raw:
                code = await self.process.wait()
                raise ToolUnavailableError(
                    f"Chromium exited with code {code} before opening its DevTools port; its stderr ends with: "
                    + " | ".join(list(self.stderr_tail)[-5:]))
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            m = _DEVTOOLS_LINE.search(line)
            if m:
                self.devtools_url = m.group(1)
                break
        self._stderr_task = loop.create_task(self._drain_stderr())
        self._session_http = aiohttp.ClientSession(connector=http_connector(LoopbackInterface()))
        self._ws = await self._session_http.ws_connect(self.devtools_url, max_msg_size=64 * 1024 * 1024)
        self._reader = loop.create_task(self._read())
        # the page target: the one tab Chromium opened with our URL
        while True:
            targets = (await self.send("Target.getTargets", timeout=max(0.1, deadline - loop.time())))["targetInfos"]
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            if loop.time() > deadline:
                raise VoicelabError("Chromium started but opened no page target")
            await asyncio.sleep(0.05)  # the tab appears a moment after the browser target
        target = next((t for t in pages if t.get("url", "").startswith(self.url.split("?")[0])), pages[0])
        res = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self._page_session = res["sessionId"]
        await self.send("Runtime.enable", session=self._page_session)
        # the tab starts on about:blank and then navigates: wait until our page is there
        want = self.url.split("#")[0]
        while True:
            try:
                href = await self.evaluate("document.readyState !== 'loading' ? location.href : ''",
                                           timeout=max(0.1, deadline - loop.time()))
            except (RemoteProtocolError, asyncio.TimeoutError):  # navigating: no context yet
                href = ""
            if isinstance(href, str) and href.startswith(want.split("?")[0]):
                break
            if loop.time() > deadline:
                raise VoicelabError(f"Chromium did not load {self.url} within {timeout:g} s")
            await asyncio.sleep(0.02)

    async def _drain_stderr(self) -> None:
        while True:
            try:
                raw = await self.process.stderr.readline()
            except ValueError:  # a line over the stream's limit: skip it
                continue
            if not raw:
                return
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    async def _read(self) -> None:
        import aiohttp

        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if "id" in data:
                    fut = self._pending.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(data)
                    continue
                self._on_event(data.get("method"), data.get("params") or {})
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RemoteProtocolError("the DevTools connection to Chromium closed", status_code=502))
            self._pending.clear()

    def _on_event(self, method: str | None, params: dict) -> None:
        if method == "Fetch.requestPaused":
            task = asyncio.ensure_future(self._fulfill(params))
            self._fake_tasks.add(task)
            task.add_done_callback(self._fake_tasks.discard)
            return
        if method == "Page.loadEventFired":
            waiters, self._load_waiters = self._load_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            return
        if len(self.console) >= 500:
            return
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append({"type": str(params.get("type")), "text": text[:1000]})
        elif method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            text = (d.get("exception") or {}).get("description") or d.get("text", "")
            self.console.append({"type": "exception", "text": str(text)[:1000]})

    # -- DevTools --------------------------------------------------------------------
    async def send(self, method: str, params: dict | None = None, *, session: str | None = None,
                   timeout: float = 10.0) -> dict:
        """Send one DevTools command and return its ``result``.

        Parameters
        ----------
        method : str
            E.g. ``"Runtime.evaluate"``.
        params : dict, optional
        session : str, optional
            Target session id (the page's for page commands); None: the browser.
        timeout : float
            Seconds to wait for the reply.

        Raises
        ------
        RemoteProtocolError
            Chromium answered with an error or the connection closed.
        """
        if self._ws is None or self._ws.closed:
            raise RemoteProtocolError("the DevTools connection to Chromium is closed", status_code=502)
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = fut
        await self._ws.send_str(json.dumps(msg))
        try:
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg["id"], None)
        if "error" in reply:
            err = reply["error"]
            raise RemoteProtocolError(f"DevTools {method} failed: {err.get('message')} ({err.get('code')})",
                                      status_code=502)
        return reply.get("result", {})

    async def evaluate(self, expression: str, *, await_promise: bool = False, timeout: float = 10.0) -> Any:
        """Evaluate a JavaScript expression in the page; return its value (JSON-like).

        Parameters
        ----------
        expression : str
        await_promise : bool
            Wait for the promise the expression returns and give its value.
        timeout : float
            Seconds.

        Raises
        ------
        RemoteProtocolError
            The expression threw (the message is the page's exception text).
        asyncio.TimeoutError
            No answer within ``timeout``.
        """
        res = await self.send("Runtime.evaluate",
                              {"expression": expression, "returnByValue": True, "awaitPromise": bool(await_promise)},
                              session=self._page_session, timeout=timeout)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text", "")
            raise RemoteProtocolError(f"page script failed: {str(text)[:300]}", status_code=500)
        return res.get("result", {}).get("value")

    async def state(self) -> dict | None:
        """A snapshot of ``window.voicelab`` (state, error, timeline, stats, history, events,
        params, done) as plain data; None before the page script ran."""
        return await self.evaluate(
            "window.voicelab ? JSON.parse(JSON.stringify(window.voicelab)) : null")

    async def wait_for(self, condition: str, *, timeout: float = 20.0) -> Any:
        """Wait until the JavaScript ``condition`` is truthy in the page; return its value.

        The page checks it every 20 ms (one ``Runtime.evaluate`` of a promise), e.g.
        ``wait_for("window.voicelab && window.voicelab.done")``.

        Raises
        ------
        asyncio.TimeoutError
            Not true within ``timeout`` seconds.
        """
        js = ("new Promise((resolve) => { const check = () => { let v; try { v = (" + condition + "); }"
              " catch (e) { v = undefined; } if (v) resolve(v); else setTimeout(check, 20); }; check(); })")
        return await self.evaluate(js, await_promise=True, timeout=timeout)

    async def navigate(self, url: str, *, timeout: float = 10.0) -> None:
        """Load ``url`` in the page and wait for its ``load`` event.

        Raises
        ------
        RemoteProtocolError
            Chromium could not load it.
        asyncio.TimeoutError
            No ``load`` event within ``timeout`` seconds.
        """
        if not self._page_enabled:
            await self.send("Page.enable", session=self._page_session)
            self._page_enabled = True
        fut = asyncio.get_running_loop().create_future()
        self._load_waiters.append(fut)
        try:
            res = await self.send("Page.navigate", {"url": url}, session=self._page_session, timeout=timeout)
            if res.get("errorText"):
                raise RemoteProtocolError(f"Chromium could not load {url}: {res['errorText']}", status_code=502)
            await asyncio.wait_for(fut, timeout)
        finally:
            if not fut.done():
                fut.cancel()
        self.url = url

    async def fake_response(self, url_pattern: str, body: str | bytes, *, status: int = 200,
                            content_type: str = "application/json") -> None:
        """Answer the page's requests matching ``url_pattern`` with ``body`` (DevTools ``Fetch``).

        The request never reaches the server. Calling again with the same pattern
        replaces the answer. Used by tests to hand the page a forged, expired or missing
        token as if the token endpoint had issued it.

        Parameters
        ----------
        url_pattern : str
            DevTools URL pattern, ``*`` and ``?`` wildcards (e.g. ``"*/token"``).
        body : str or bytes
        status : int
            HTTP status of the answer.
        content_type : str
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        self._fakes[url_pattern] = (int(status), data, content_type)
        await self.send("Fetch.enable", {"patterns": [{"urlPattern": p, "requestStage": "Request"}
                                                       for p in self._fakes]}, session=self._page_session)

    async def _fulfill(self, params: dict) -> None:
        import base64
        import fnmatch

        url = str((params.get("request") or {}).get("url", ""))
        try:
            for pattern, (status, data, ctype) in self._fakes.items():
                if fnmatch.fnmatchcase(url, pattern):
                    await self.send("Fetch.fulfillRequest", {
                        "requestId": params["requestId"], "responseCode": status,
                        "responseHeaders": [{"name": "Content-Type", "value": ctype},
                                            {"name": "Cache-Control", "value": "no-store"}],
                        "body": base64.b64encode(data).decode("ascii")}, session=self._page_session)
                    return
            await self.send("Fetch.continueRequest", {"requestId": params["requestId"]}, session=self._page_session)
        except (RemoteProtocolError, asyncio.TimeoutError, ConnectionError) as exc:
            self.console.append({"type": "devtools", "text": f"could not answer {url}: {exc}"[:1000]})

    # -- shutdown --------------------------------------------------------------------
    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - the group id was reused by someone else
            return False
        return True

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def close(self, *, timeout: float = 5.0) -> None:
        """Close the browser (``Browser.close``, then SIGTERM/SIGKILL to its process group).

        Returns once the browser process was reaped and no process of its group is left.
        """
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        if self._ws is not None and not self._ws.closed and self.process.returncode is None:
            with contextlib.suppress(RemoteProtocolError, asyncio.TimeoutError, ConnectionError):
                await self.send("Browser.close", timeout=2.0)
        for task in list(self._fake_tasks):
            task.cancel()
        if self._fake_tasks:
            await asyncio.gather(*self._fake_tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session_http is not None:
            await self._session_http.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                self._signal_group(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
                break
            except asyncio.TimeoutError:
                continue
        # helpers exit a moment after the browser: wait for the whole group (bounded)
        deadline = loop.time() + timeout
        while self._group_alive():
            if loop.time() > deadline:
                self._signal_group(signal.SIGKILL)
                deadline = loop.time() + timeout
            await asyncio.sleep(0.02)
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stderr_task


@contextlib.asynccontextmanager
async def launch_chromium(
    url: str,
    *,
    wav: str | os.PathLike,
    user_data_dir: str | os.PathLike,
    extra_flags: Sequence[str] = (),
    executable: str | None = None,
    startup_timeout: float = 20.0,
) -> AsyncIterator[ChromiumPage]:
    """Start headless Chromium on ``url`` with ``wav`` as its microphone.

    Parameters
    ----------
    url : str
        The page to open; must be ``http://127.0.0.1...`` or ``http://localhost...`` (a
        secure context for ``getUserMedia``). For the lab's client page:
        ``front.url + "/?autostart=1&seconds=8"``.
    wav : path
        PCM WAV file played as the microphone, looped with a small gap each time.
    user_data_dir : path
        Profile directory (created if needed; use a fresh temporary one per launch).
    extra_flags : sequence of str
        More Chromium flags, appended to :func:`chromium_flags`.
    executable : str, optional
        Chromium program; default :func:`find_chromium`.
    startup_timeout : float
        Seconds allowed until the page can be driven.

    Yields
    ------
    ChromiumPage

    Raises
    ------
    ToolUnavailableError
        No Chromium installed (Debian package ``chromium``), or it did not start.
    ParameterError
        Bad URL, missing WAV file, bad flags.

    Examples
    --------
    >>> async with launch_chromium(front.url + "/?autostart=1&seconds=5", wav="speech.wav",
    ...                            user_data_dir=tmp) as page:          # doctest: +SKIP
    ...     await page.wait_for("window.voicelab.done", timeout=20)
    ...     print((await page.state())["timeline"])
    """
    if not isinstance(url, str) or not re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?(/|$)", url):
        raise ParameterError(f"url must be a page on http://127.0.0.1 or http://localhost (a secure context), "
                             f"got {url!r:.100}")
    wav_path = _check_wav(wav)
    exe = executable or find_chromium()
    if exe is None:
        raise ToolUnavailableError(f"Chromium is not installed (Debian package {CHROMIUM_PACKAGE})")
    Path(user_data_dir).mkdir(parents=True, exist_ok=True)
    flags = chromium_flags(wav=wav_path, user_data_dir=Path(user_data_dir).resolve(), extra_flags=extra_flags)
    try:
        process = await asyncio.create_subprocess_exec(
            exe, *flags, url, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ToolUnavailableError(f"could not start Chromium {exe!r}: {exc}") from None
    page = ChromiumPage(process, flags=flags, url=url)
    try:
        await page._start(startup_timeout)
        yield page
    finally:
        await asyncio.shield(page.close())


# ---------------------------------------------------------------------------------------
# Scoring a looped fake-capture file
# ---------------------------------------------------------------------------------------


def score_loops(reference: Any, received: Any, sample_rate: int, *, max_gap_ms: float = 500.0,
                min_confidence: float = 0.3) -> list[dict[str, Any]]:
    """Find each repetition of a looped ``reference`` in ``received`` and score it.

    Chromium's fake microphone plays the file again and again with a small, varying
    gap, so one alignment for the whole recording drifts. The first complete copy is
    found by cross-correlation (GCC-PHAT, :func:`voicelab.audio.estimate_delay`) over the
    first two lengths + 1 s; each following copy is searched ``0..max_gap_ms`` after the
    end of the previous one. Copies cut by the start or the end of the recording are
    skipped.

    Parameters
    ----------
    reference : array_like
        The file's samples (float) at ``sample_rate``.
    received : array_like
        What arrived, at ``sample_rate`` (resample first).
    sample_rate : {8000, 16000}
        Hz.
    max_gap_ms : float
        Largest extra gap between copies searched (ms); Chromium's are tens of samples
        to a few ms, but a wide search keeps the alignment confidence meaningful.
    min_confidence : float
        Copies whose alignment confidence is lower are reported with ``pesq_*`` None.

    Returns
    -------
    list of dict
        Per complete copy: ``start_s`` (position in ``received``), ``gap_ms`` (extra gap
        before it; None for the first), ``confidence``, ``pesq_wb`` (16 kHz only) and
        ``pesq_nb``.
    """
    from .. import audio, metrics

    if sample_rate not in (8000, 16000):
        raise ParameterError(f"sample_rate must be 8000 or 16000 Hz (PESQ rates), got {sample_rate!r}")
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    rec = np.asarray(received, dtype=np.float64).reshape(-1)
    n = len(ref)
    if n < sample_rate // 2:
        raise ParameterError(f"reference is {n / sample_rate:.2f} s long; give at least 0.5 s of speech")
    out: list[dict[str, Any]] = []
    if len(rec) < n:
        return out
    # first copy: the lag of the reference within the first n + 1 s (a copy cut at the
    # start still correlates, so pick the peak and skip a copy that starts before 0)
    head = rec[: min(len(rec), 2 * n + sample_rate)]
    est = audio.estimate_delay(ref, head, sample_rate, max_delay_ms=1000.0 * len(head) / sample_rate, causal=True)
    start = int(round(est.delay_samples))
    if start > n + sample_rate // 2:  # pragma: no cover - correlation found a later copy
        start -= n
    gap_ms: float | None = None
    conf = float(est.confidence)
    max_gap = int(round(max_gap_ms * sample_rate / 1000.0))
    while start + n <= len(rec):
        seg = rec[start: start + n]
        row: dict[str, Any] = {"start_s": start / sample_rate, "gap_ms": gap_ms, "confidence": conf,
                               "pesq_wb": None, "pesq_nb": None}
        if conf >= min_confidence:
            try:
                if sample_rate == 16000:
                    row["pesq_wb"] = metrics.pesq(ref, seg, 16000, mode="wb")
                    row["pesq_nb"] = metrics.pesq(audio.resample(ref, 16000, 8000), audio.resample(seg, 16000, 8000),
                                                  8000, mode="nb")
                else:
                    row["pesq_nb"] = metrics.pesq(ref, seg, 8000, mode="nb")
            except VoicelabError:
                pass
        out.append(row)
        # the next copy: n samples later plus a small gap
        nxt = start + n
        window = rec[nxt: nxt + n + max_gap]
        if len(window) < n:
            break
        e = audio.estimate_delay(ref, window, sample_rate, max_delay_ms=max(1.0, max_gap_ms), causal=True)
        lag = int(round(e.delay_samples))
        gap_ms, conf = lag * 1000.0 / sample_rate, float(e.confidence)
        start = nxt + lag
    return out
