"""A bot running elsewhere, called by URL (``voicelab call --target pipecat+ws://... / pipecat+webrtc://...``).

The live tests start the lab's Pipecat bot as a separate process, as a researcher's own
bot would run, and call it only by its URL: the caller measures the turns at its ear
exactly as with ``--agent pipecat``, and reports no stage breakdown and no Pipecat figure
(it cannot see inside a bot it did not start). The bot's own timelines, taken from the
process afterwards, are used only to check the caller's figures against.
Bad input (refused connection, a server that never answers, HTTP 404, a non-loopback
host, an unknown scheme) must give one typed line quickly.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO
from tests.test_pipecat import _need_pipecat, _utterances

SHORT = dict(reply_end_silence_s=0.4, gap_s=0.2, reply_timeout_s=5.0)
BOT = dict(replies="short", stop_ms=400.0, llm_ttft_s=0.05, llm_sigma=0.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _call_external(transport: str, n: int, path: str) -> tuple[dict, dict]:
    from voicelab.pipecat_bot import BotProcess
    from voicelab.pipecat_turns import pipecat_call

    async with BotProcess(transport, **BOT) as bot:  # its own process: to the caller, a URL and nothing else
        host, port = bot.address
        res = await asyncio.wait_for(pipecat_call(target=f"pipecat+{transport}://{host}:{port}{path}", turns=n,
                                                  utterances=_utterances(n), **SHORT), 90.0)  # fmt: skip
        await bot.collect()
        inside = bot.summary()
    return res, inside


def _check_external(res: dict, inside: dict, n: int, transport: str) -> None:
    assert res["agent_kind"] == "external" and res["transport"] == transport
    assert res["target"].startswith(f"pipecat+{transport}://127.0.0.1:")
    assert res["turn.count"] == n
    assert res["turn.answered"] == n, [r.get("reason") for r in res["turns"]]
    assert res["turn.outcomes"] == {"ok": n}
    # the caller's own figure, as for the lab's bot: positive, above what the bot itself took
    totals = sorted(r["total_ms"] for r in res["turns"])
    server = sorted(t["server_ms"] for t in inside["turns"] if t.get("server_ms") is not None)
    assert len(server) >= n - 1
    assert totals[0] > 0 and totals[len(totals) // 2] > server[len(server) // 2]
    assert res["turn.total_ms.p50"] == pytest.approx(totals[len(totals) // 2]) or n % 2 == 0
    # nothing invented: Pipecat's figure existed inside the bot, the caller says it was not reported
    assert inside["pipecat_latency_ms"], "the bot measured its own latency"
    assert "not reported" in res["pipecat_figure"]
    assert res["turn.pipecat_ms.p50"] is None and res["turn.pipecat_diff_ms.p50"] is None
    assert res["turn.wer"] is None and res["agent"] == [] and res["pipecat_metrics_ms.p50"] is None
    for r in res["turns"]:
        assert r["recognised"] is None and r["pipecat_ms"] is None and "residual_ms" not in r
        assert "not reported" in r["reason"]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_external_bot_by_websocket_url_is_measured_at_the_callers_ear():
    _need_pipecat()
    res, inside = asyncio.run(_call_external("ws", 3, "/ws"))
    _check_external(res, inside, 3, "ws")
    assert res["codec"] == "pcmu" and res["net"] == "loopback"


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_external_bot_by_webrtc_offer_url_is_measured_at_the_callers_ear():
    _need_pipecat()
    res, inside = asyncio.run(_call_external("webrtc", 3, "/api/offer"))
    _check_external(res, inside, 3, "webrtc")
    assert res["codec"] == "opus" and res["frames_heard"] > 50


def test_parse_bot_target_and_bad_urls_are_parameter_errors():
    from voicelab.errors import ParameterError
    from voicelab.pipecat_turns import parse_bot_target, pipecat_call

    assert parse_bot_target("pipecat+ws://127.0.0.1:8765/ws") == ("ws", "127.0.0.1", 8765, "/ws")
    assert parse_bot_target("pipecat+webrtc://localhost:7860") == ("webrtc", "localhost", 7860, "/api/offer")
    assert parse_bot_target("PIPECAT+WS://[::1]:9/") == ("ws", "::1", 9, "/")
    for bad in ("ws://127.0.0.1:1/", "pipecat+http://127.0.0.1:1/", "pipecat+ws://127.0.0.1/ws",
                "pipecat+ws://:80/", "pipecat+ws://127.0.0.1:99999/", "127.0.0.1:8765"):  # fmt: skip
        with pytest.raises(ParameterError):
            parse_bot_target(bad)
    for kw in ({"target": "pipecat+ws://192.0.2.1:8765/ws"},  # the lab never sends off this machine
               {"target": "pipecat+ws://127.0.0.1:1/ws", "transport": "webrtc"},
               {"target": "pipecat+ws://127.0.0.1:1/ws", "connect_timeout_s": 0}):  # fmt: skip
        with pytest.raises(ParameterError):
            asyncio.run(pipecat_call(turns=1, utterances=[], **kw))


async def _bad_peers():
    """A 404 HTTP server and a TCP server that accepts and never answers, on free ports."""
    from aiohttp import web

    runner = web.AppRunner(web.Application(), access_log=None)  # no routes: 404 for everything
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    p404 = int(site._server.sockets[0].getsockname()[1])

    async def silent(reader, writer):
        await reader.read()  # until the caller gives up

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    return runner, p404, srv, int(srv.sockets[0].getsockname()[1])


def test_unreachable_refused_silent_and_not_a_bot_are_one_typed_error_each():
    from voicelab.errors import PeerTimeoutError, RemoteProtocolError
    from voicelab.pipecat_turns import pipecat_call

    async def go():
        runner, p404, srv, psilent = await _bad_peers()
        refused = _free_port()
        out = []
        try:
            for scheme in ("ws", "webrtc"):
                for port, want in ((refused, RemoteProtocolError), (p404, RemoteProtocolError),
                                   (psilent, PeerTimeoutError)):  # fmt: skip
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    with pytest.raises(want) as ei:
                        await pipecat_call(target=f"pipecat+{scheme}://127.0.0.1:{port}/x", turns=1,
                                           utterances=_utterances(1), connect_timeout_s=1.0)  # fmt: skip
                    out.append((scheme, port, ei.value, loop.time() - t0))
        finally:
            srv.close()
            await runner.cleanup()
        return refused, p404, psilent, out

    refused, p404, psilent, out = asyncio.run(go())
    for scheme, port, exc, took in out:
        msg = str(exc)
        assert "\n" not in msg and took < 5.0, (scheme, port, msg, took)
        if port == refused:
            assert "connection refused" in msg and exc.status_code == 503
        elif port == p404:
            assert "404" in msg and exc.status_code == 404
        else:
            assert "within 1 s" in msg


class _NotABot(http.server.BaseHTTPRequestHandler):
    def _404(self) -> None:
        self.send_error(404, "Not Found")

    do_GET = do_POST = _404

    def log_message(self, *args) -> None:
        pass


def test_cli_bot_url_errors_are_one_line_and_do_not_hang():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotABot)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        cases = ((f"pipecat+ws://127.0.0.1:{_free_port()}/ws", [], "connection refused"),
                 (f"pipecat+webrtc://127.0.0.1:{srv.server_address[1]}/api/offer", [], "HTTP 404"),
                 (f"pipecat+ws://127.0.0.1:{srv.server_address[1]}/ws", [], "HTTP 404"),
                 ("pipecat+ws://127.0.0.1:1/ws", ["--transport", "webrtc"], "reached over ws"),
                 ("pipecat+ws://127.0.0.1:1/ws", ["--agent", "pipeline"], "no --agent pipeline"))  # fmt: skip
        for target, extra, says in cases:
            p = subprocess.run([sys.executable, "-m", "voicelab", "call", "--target", target, "--turns", "1", *extra,
                                "--json"], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
            assert p.returncode == 2, (target, p.stdout, p.stderr)
            assert "Traceback" not in p.stderr and p.stdout == ""
            assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, (target, p.stderr)
    finally:
        srv.shutdown()
        srv.server_close()
