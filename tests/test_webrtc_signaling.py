"""Tokens (sans-IO) and the WebRTC signaling server on 127.0.0.1 (no browser here)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicelab.errors import LocalProtocolError, ParameterError, RemoteProtocolError
from voicelab.net.iface import LoopbackInterface
from voicelab.webrtc.signaling import SignalingClient, SignalingServer, TokenBucket
from voicelab.webrtc.tokens import TokenClaims, issue_token, verify_token

from .conftest import run_clean

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
NONCE = b"nonce-01"
OFFER = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------


def test_token_round_trip_and_claims():
    tok = issue_token(SECRET, subject="127.0.0.1", now=1000.25, ttl_s=30, nonce=NONCE)
    assert re.fullmatch(r"[A-Za-z0-9_\-.]+", tok), "token must be URL-safe as is"
    claims = verify_token(SECRET, tok, now=1010.0)
    assert claims == TokenClaims(subject="127.0.0.1", issued_at=1000.25, expires_at=1030.25, nonce=NONCE)
    assert claims.ttl_s == 30
    # deterministic for equal inputs, different for another nonce
    assert issue_token(SECRET, subject="127.0.0.1", now=1000.25, ttl_s=30, nonce=NONCE) == tok
    assert issue_token(SECRET, subject="127.0.0.1", now=1000.25, ttl_s=30, nonce=b"nonce-02") != tok


def test_token_expiry_boundaries():
    tok = issue_token(SECRET, subject="a", now=100.0, ttl_s=60, nonce=NONCE)
    skew = 0.5
    verify_token(SECRET, tok, now=160.0 + skew - 1e-3, clock_skew_s=skew)  # still valid
    with pytest.raises(RemoteProtocolError, match="^expired token") as info:
        verify_token(SECRET, tok, now=160.0 + skew + 1e-3, clock_skew_s=skew)
    assert info.value.status_code == 401
    verify_token(SECRET, tok, now=100.0 - skew + 1e-3, clock_skew_s=skew)  # issuer slightly ahead
    with pytest.raises(RemoteProtocolError, match="^token not yet valid") as info:
        verify_token(SECRET, tok, now=100.0 - skew - 1e-3, clock_skew_s=skew)
    assert info.value.status_code == 401


def test_token_forged_payload_and_wrong_secret():
    tok = issue_token(SECRET, subject="alice", now=0.0, nonce=NONCE)
    version, payload, sig = tok.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = "mallory"
    body["exp"] = 1e9
    forged_payload = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(RemoteProtocolError, match="^forged token") as info:
        verify_token(SECRET, f"{version}.{forged_payload}.{sig}", now=1.0)
    assert info.value.status_code == 403
    with pytest.raises(RemoteProtocolError, match="^forged token") as info:
        verify_token(OTHER_SECRET, tok, now=1.0)
    assert info.value.status_code == 403
    # a token made with another secret but otherwise perfect is refused too
    other = issue_token(OTHER_SECRET, subject="alice", now=0.0, nonce=NONCE)
    with pytest.raises(RemoteProtocolError, match="^forged token"):
        verify_token(SECRET, other, now=1.0)


def test_token_every_single_character_change_is_refused():
    tok = issue_token(SECRET, subject="alice", now=0.0, nonce=NONCE)
    alphabet = string.ascii_letters + string.digits + "-_."
    for i, ch in enumerate(tok):
        for repl in (alphabet[(alphabet.index(ch) + 1) % len(alphabet)], "~"):
            bad = tok[:i] + repl + tok[i + 1 :]
            with pytest.raises(RemoteProtocolError) as info:
                verify_token(SECRET, bad, now=1.0)
            assert info.value.status_code in (401, 403)


def test_token_truncated_and_garbage_are_malformed_or_forged():
    tok = issue_token(SECRET, subject="alice", now=0.0, nonce=NONCE)
    for n in range(len(tok)):
        with pytest.raises(RemoteProtocolError):
            verify_token(SECRET, tok[:n], now=1.0)
    for junk in (tok + "x", tok + ".", " " + tok, "v2" + tok[2:], "a.b.c", "....", "v1..", "\u00e9" * 10, "x" * 5000):
        with pytest.raises(RemoteProtocolError):
            verify_token(SECRET, junk, now=1.0)
    for not_str in (None, 123, tok.encode(), ["v1"], {"token": tok}):
        with pytest.raises(RemoteProtocolError, match="^malformed token") as info:
            verify_token(SECRET, not_str, now=1.0)
        assert info.value.status_code == 401


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="v1.-_ABCxyz0189", max_size=120)))
def test_token_garbage_only_raises_remote_protocol_error(garbage):
    with pytest.raises(RemoteProtocolError) as info:
        verify_token(SECRET, garbage, now=1.0)
    assert info.value.status_code in (401, 403)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_token_signed_by_us_with_arbitrary_payload_never_crashes(payload):
    # Even a payload that passes the signature (someone holding the secret) is parsed
    # defensively: only typed errors, never KeyError/TypeError.
    import hashlib
    import hmac

    p = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    sig = hmac.new(SECRET, b"voicelab-signaling-token\nv1." + p.encode(), hashlib.sha256).digest()
    tok = f"v1.{p}." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    with pytest.raises(RemoteProtocolError, match="^malformed token"):
        verify_token(SECRET, tok, now=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": b"short"},
        {"secret": "a str secret of enough length!!!"},
        {"subject": ""},
        {"subject": 5},
        {"ttl_s": 0},
        {"ttl_s": -1},
        {"ttl_s": float("nan")},
        {"ttl_s": 1e9},
        {"now": float("inf")},
        {"now": True},
        {"nonce": b"short"},
        {"nonce": "a string nonce"},
    ],
)
def test_issue_token_bad_parameters(kwargs):
    args = {"secret": SECRET, "subject": "a", "now": 0.0, "ttl_s": 60, "nonce": NONCE, **kwargs}
    secret = args.pop("secret")
    with pytest.raises(ParameterError):
        issue_token(secret, **args)


def test_verify_token_bad_parameters_are_ours():
    tok = issue_token(SECRET, subject="a", now=0.0, nonce=NONCE)
    with pytest.raises(ParameterError):
        verify_token(b"short", tok, now=0.0)
    with pytest.raises(ParameterError):
        verify_token(SECRET, tok, now=float("nan"))
    with pytest.raises(ParameterError):
        verify_token(SECRET, tok, now=0.0, clock_skew_s=-1)


def test_token_bucket_rate_and_burst():
    b = TokenBucket(10.0, burst=3, now=0.0)
    assert [b.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.allow(0.05) is False  # half a token refilled
    assert b.allow(0.1) is True  # one token after 1/rate
    assert [b.allow(10.0) for _ in range(4)] == [True, True, True, False]  # refill capped at burst
    assert b.allow(5.0) is False  # time going backwards never refills
    with pytest.raises(ParameterError):
        TokenBucket(0)
    with pytest.raises(ParameterError):
        TokenBucket(5, burst=0.5)


# ---------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------


class StubAgent:
    """Answers each offer with an SDP derived from it; records what the hooks saw."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.offers: list[str] = []
        self.sessions: list = []
        self.candidates: list = []
        self.byes: list[str | None] = []
        self.fail_first = fail_first

    async def on_offer(self, session, sdp: str) -> str:
        self.offers.append(sdp)
        self.sessions.append(session)
        if self.fail_first and len(self.offers) == 1:
            raise RuntimeError("no codec in common")
        session.on_candidate = lambda s, c: self.candidates.append(c)

        async def on_bye(s):
            self.byes.append(s.end_reason)

        session.on_bye = on_bye
        return "answer-to:" + sdp[::-1]


def _server(iface, agent, **kw) -> SignalingServer:
    return SignalingServer(iface, secret=SECRET, on_offer=agent.on_offer, rng=np.random.default_rng(1), **kw)


def run(fn):
    run_clean(fn, timeout=TIMEOUT)


def test_token_endpoint_issues_verifiable_tokens():
    async def main():
        iface = LoopbackInterface()
        server = _server(iface, StubAgent(), token_ttl_s=42)
        await server.start()
        client = SignalingClient(iface, server.url)
        try:
            http = client._http()
            async with http.post(server.url + "/token") as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "no-store"
                body = await resp.json()
            assert body["expires_in"] == 42
            claims = verify_token(SECRET, body["token"], now=iface.time())
            assert claims.subject == "127.0.0.1"
            assert claims.ttl_s == pytest.approx(42)
            second = await client.fetch_token()
            assert second != body["token"]
            async with http.get(server.url + "/token") as resp:
                assert resp.status == 405
            assert server.stats.tokens_issued == 2
        finally:
            await client.close()
            await server.close()

    run(main)


def test_offer_answer_candidates_and_bye_with_event_log():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        client = SignalingClient(iface, server.url, origin=server.url)
        try:
            t0 = iface.time()
            await client.connect()
            answer = await client.offer(OFFER)
            assert answer == "answer-to:" + OFFER[::-1]
            assert agent.offers == [OFFER]
            session = agent.sessions[0]
            assert session.remote[0] == "127.0.0.1" and session.subject == "127.0.0.1"
            assert session.offer_sdp == OFFER and session.answer_sdp == answer
            assert server.sessions == {session.id: session}
            # server -> client trickle
            await session.send_candidate({"candidate": "candidate:2 1 udp 1 127.0.0.1 4000 typ host", "sdpMid": "0"})
            got = await client.receive(timeout=TIMEOUT)
            assert got["type"] == "candidate" and got["candidate"]["candidate"].startswith("candidate:2")
            # client -> server trickle, then the client hangs up (same socket: handled in order)
            cand = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
            await client.send_candidate(cand)
            await client.send_candidate(None)
            await client.bye()
            await session.wait_closed()
            t1 = iface.time()
            assert agent.candidates == [cand, None]
            assert session.remote_candidates == [cand, None]
            assert agent.byes == ["bye_received"]
            assert session.close_code == 1000
            kinds = [e.kind for e in session.events]
            assert kinds == [
                "connected",
                "offer_received",
                "answer_sent",
                "candidate_sent",
                "candidate_received",
                "candidate_received",
                "bye_received",
                "closed",
            ]
            times = [e.time for e in session.events]
            assert times == sorted(times) and t0 <= times[0] and times[-1] <= t1
            assert session.first("answer_sent") >= session.first("offer_received")
            assert session.events[1].detail["sdp_bytes"] == len(OFFER)
            client_kinds = [e.kind for e in client.events]
            assert client_kinds[:4] == ["token_received", "connected", "offer_sent", "answer_received"]
            assert server.stats.offers == 1 and server.stats.answers == 1
            assert server.sessions == {}
        finally:
            await client.close()
            await server.close()

    run(main)


def test_missing_forged_expired_and_reused_tokens_are_refused_before_upgrade():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        clients = []

        async def attempt(token):
            c = SignalingClient(iface, server.url)
            clients.append(c)
            with pytest.raises(RemoteProtocolError) as info:
                await c.connect(token)
            return info.value.status_code

        try:
            # missing: no token parameter at all, and an empty one
            raw = SignalingClient(iface, server.url)
            clients.append(raw)
            import aiohttp

            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await raw._http().ws_connect(server.ws_url)
            assert info.value.status == 401
            assert await attempt("") == 401
            good = server.issue("tester")
            v, p, s = good.split(".")
            assert await attempt(f"{v}.{p}.{s[::-1]}") == 403  # forged signature
            other = issue_token(OTHER_SECRET, subject="x", now=iface.time(), nonce=NONCE)
            assert await attempt(other) == 403  # wrong secret
            expired = issue_token(SECRET, subject="x", now=iface.time() - 120, ttl_s=60, nonce=NONCE)
            assert await attempt(expired) == 401
            assert await attempt("garbage!") == 401
            # a valid token works once, then is refused
            ok = SignalingClient(iface, server.url)
            clients.append(ok)
            await ok.connect(good)
            assert await attempt(good) == 401
            st_ = server.stats
            assert (st_.refused_missing, st_.refused_forged, st_.refused_expired, st_.refused_malformed, st_.refused_reused) == (
                2,
                2,
                1,
                1,
                1,
            )
            assert st_.sessions_opened == 1
            assert agent.offers == []  # no refused client ever reached on_offer
            assert await ok.offer(OFFER)  # ... while the hook does work for an admitted one
            assert agent.offers == [OFFER]
        finally:
            for c in clients:
                await c.close()
            await server.close()

    run(main)


def test_origin_check():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent, allowed_origins=["https://lab.example:8443"])
        await server.start()
        clients = []
        try:
            for origin, allowed in [
                ("http://evil.example", False),
                ("null", False),
                ("https://lab.example:9999", False),
                ("http://127.0.0.1.evil.example", False),
                ("not a url", False),
                ("https://lab.example:8443", True),
                ("http://localhost:5173", True),
                ("http://127.0.0.1:8080", True),
                (server.url, True),
            ]:
                c = SignalingClient(iface, server.url, origin=origin)
                clients.append(c)
                if allowed:
                    await c.connect()
                    assert not c.closed
                else:
                    async with c._http().post(server.url + "/token", headers={"Origin": origin}) as resp:
                        assert resp.status == 403, origin
                    with pytest.raises(RemoteProtocolError) as info:
                        await c.connect(server.issue("t"))
                    assert info.value.status_code == 403, origin
            assert server.stats.refused_origin == 10
            assert agent.offers == []
            with pytest.raises(ParameterError):
                SignalingServer(iface, secret=SECRET, on_offer=agent.on_offer, allowed_origins=["lab.example"])
        finally:
            for c in clients:
                await c.close()
            await server.close()

    run(main)


def test_oversize_message_closes_1009_and_other_sessions_continue():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent, max_message_bytes=4096)
        await server.start()
        a = SignalingClient(iface, server.url)
        b = SignalingClient(iface, server.url)
        try:
            await a.connect()
            await b.connect()
            await a.offer(OFFER)
            await a.send({"type": "candidate", "candidate": {"candidate": "x" * 500, "sdpMid": "0"}})  # under the limit
            await a.send_raw(json.dumps({"type": "offer", "sdp": "v" * 5000}))
            assert await a.receive(timeout=TIMEOUT) is None
            assert a.close_code == 1009
            await agent.sessions[0].wait_closed()
            assert agent.byes == ["message_too_big"]
            assert server.stats.oversized == 1
            assert agent.candidates == [{"candidate": "x" * 500, "sdpMid": "0", "sdpMLineIndex": None}]
            # the other call is untouched
            assert await b.offer(OFFER + "a=b\r\n") == "answer-to:" + (OFFER + "a=b\r\n")[::-1]
        finally:
            await a.close()
            await b.close()
            await server.close()

    run(main)


def test_rate_limit_sends_error_then_closes_1008():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent, max_messages_per_s=5)
        await server.start()
        client = SignalingClient(iface, server.url)
        try:
            await client.connect()
            # 40 messages at 5/s with a burst of 5 would need > 7 s to stay within the rate.
            # "error" messages get no reply, so the first reply must be the limiter's.
            for _ in range(40):
                try:
                    await client.send({"type": "error", "code": "x", "message": "noise"})
                except (LocalProtocolError, ConnectionError):
                    break
            reply = await client.receive(timeout=TIMEOUT)
            assert reply["type"] == "error" and reply["code"] == "rate_limited"
            assert await client.receive(timeout=TIMEOUT) is None
            assert client.close_code == 1008
            assert server.stats.rate_limited == 1
            assert 6 <= server.stats.messages_received <= 40
        finally:
            await client.close()
            await server.close()

    run(main)


@pytest.mark.parametrize("frame, close_code", [
    ("{not json", 1007),
    ("[1, 2, 3]", 1007),
    ("[" * 60000, 1007),  # nesting deep enough to hit the JSON recursion limit
    (b"\x00\x01binary", 1003),
])
def test_malformed_json_gets_an_error_and_closes_only_that_socket(frame, close_code):
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        good, bad = SignalingClient(iface, server.url), SignalingClient(iface, server.url)
        try:
            await good.connect()
            await bad.connect()
            await bad.send_raw(frame)
            reply = await bad.receive(timeout=TIMEOUT)
            assert reply is not None and reply["type"] == "error" and reply["code"] == "malformed", reply
            assert await bad.receive(timeout=TIMEOUT) is None and bad.close_code == close_code
            assert server.stats.malformed_closed == 1
            # the other session is untouched and can still make its call
            assert await good.offer(OFFER) == "answer-to:" + OFFER[::-1]
        finally:
            await good.close()
            await bad.close()
            await server.close()

    run(main)


def test_bad_messages_get_error_replies_and_connection_stays_usable():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        client = SignalingClient(iface, server.url)
        bad = [
            ('{"no": "type"}', "unknown_type"),
            ('{"type": "dance"}', "unknown_type"),
            ('{"type": "offer"}', "bad_message"),
            ('{"type": "offer", "sdp": 42}', "bad_message"),
            ('{"type": "answer", "sdp": "v=0"}', "unexpected"),
            ('{"type": "candidate", "candidate": {"candidate": "c"}}', "unexpected"),  # before the offer
            ('{"type": "candidate"}', "bad_message"),
            ('{"type": "candidate", "candidate": "candidate:1"}', "bad_message"),
        ]
        try:
            await client.connect()
            for frame, code in bad:
                await client.send_raw(frame)
                reply = await client.receive(timeout=TIMEOUT)
                assert reply is not None, f"connection closed after {frame!r:.40}"
                assert reply["type"] == "error" and reply["code"] == code, (frame[:40], reply)
                assert isinstance(reply["message"], str) and reply["message"]
            assert agent.offers == []
            assert await client.offer(OFFER) == "answer-to:" + OFFER[::-1]
            # after the answer: a second offer and a bad candidate are refused, the call goes on
            await client.send({"type": "offer", "sdp": OFFER})
            assert (await client.receive(timeout=TIMEOUT))["code"] == "unexpected"
            await client.send_raw('{"type": "candidate", "candidate": {"candidate": "c", "sdpMLineIndex": -1}}')
            assert (await client.receive(timeout=TIMEOUT))["code"] == "bad_message"
            assert not client.closed
            assert server.stats.errors_sent == len(bad) + 2
            assert agent.offers == [OFFER]
        finally:
            await client.close()
            await server.close()

    run(main)


def test_on_offer_failure_is_reported_and_the_session_can_retry():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent(fail_first=True)
        server = _server(iface, agent)
        await server.start()
        client = SignalingClient(iface, server.url)
        try:
            await client.connect()
            with pytest.raises(RemoteProtocolError, match="offer_failed.*no codec in common"):
                await client.offer(OFFER)
            assert await client.offer(OFFER) == "answer-to:" + OFFER[::-1]
            assert server.stats.callback_errors == 1 and server.stats.answers == 1
        finally:
            await client.close()
            await server.close()

    run(main)


def test_server_bye_and_server_close_end_sessions_without_leaks():
    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        a = SignalingClient(iface, server.url)
        b = SignalingClient(iface, server.url)
        await a.connect()
        await b.connect()
        await a.offer(OFFER)
        await b.offer(OFFER)
        sa, sb = agent.sessions
        # the agent hangs up call a
        await sa.bye()
        assert (await a.receive(timeout=TIMEOUT))["type"] == "bye"
        assert await a.receive(timeout=TIMEOUT) is None and a.close_code == 1000
        await sa.wait_closed()
        # the server shuts down in the middle of call b
        await server.close()
        assert await b.receive(timeout=TIMEOUT) is None
        assert b.close_code == 1001
        assert agent.byes == ["bye_sent", "server_closed"]
        assert [e.kind for e in sb.events][-1] == "closed"
        assert server.stats.sessions_opened == server.stats.sessions_closed == 2
        await a.close()
        await b.close()
        await server.close()  # idempotent
        with pytest.raises(LocalProtocolError):
            await server.start()

    run(main)  # run_clean fails on tasks or file descriptors left behind


def test_vanishing_clients_end_their_calls_and_free_everything():
    n_calls = 30

    async def main():
        iface = LoopbackInterface()
        agent = StubAgent()
        server = _server(iface, agent)
        await server.start()
        keeper = SignalingClient(iface, server.url)  # a call that must survive the others
        await keeper.connect()
        await keeper.offer(OFFER)
        for _ in range(n_calls):
            c = SignalingClient(iface, server.url)
            await c.connect()
            await c.offer(OFFER)
            c._ws._response.connection.transport.abort()  # the client vanishes: no close frame, no bye
            await agent.sessions[-1].wait_closed()
            await c.close()
        assert agent.byes == ["socket_closed"] * n_calls
        assert all(s.close_code == 1006 for s in agent.sessions[1:])
        assert list(server.sessions) == [agent.sessions[0].id]
        await keeper.send_candidate(None)
        await keeper.bye()
        await agent.sessions[0].wait_closed()
        assert agent.sessions[0].remote_candidates == [None]
        assert server.stats.sessions_opened == server.stats.sessions_closed == n_calls + 1
        await server.close()

    run(main)  # no tasks or descriptors left behind


def test_server_close_abandons_a_hanging_on_offer():
    async def main():
        iface = LoopbackInterface()
        started = asyncio.Event()
        cancelled = []

        async def on_offer(session, sdp):
            started.set()
            try:
                await asyncio.get_running_loop().create_future()  # never answers
            except asyncio.CancelledError:
                cancelled.append(session.id)
                raise

        server = SignalingServer(iface, secret=SECRET, on_offer=on_offer)
        await server.start()
        client = SignalingClient(iface, server.url)
        try:
            await client.connect()
            await client.send({"type": "offer", "sdp": OFFER})
            await started.wait()
            t0 = iface.time()
            await server.close()
            assert iface.time() - t0 < 1.0  # no waiting for a hook that never returns
            assert len(cancelled) == 1
            assert await client.receive(timeout=TIMEOUT) is None and client.close_code == 1001
            assert server.stats.answers == 0
        finally:
            await client.close()
            await server.close()

    run(main)


def test_client_page_is_served_with_expected_elements():
    async def main():
        iface = LoopbackInterface()
        server = _server(iface, StubAgent())
        with pytest.raises(LocalProtocolError):
            server.url
        await server.start()
        client = SignalingClient(iface, server.url)
        try:
            http = client._http()
            async with http.get(server.url + "/") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                html = await resp.text()
            for element_id in ("call", "hangup", "state", "error", "stats", "stats-body", "remote", "log", "constraints"):
                assert f'id="{element_id}"' in html, element_id
            assert '<script src="client.js">' in html
            async with http.get(server.url + "/client.js") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/javascript"
                js = await resp.text()
            for needle in (
                "window.voicelab",
                '"/token"',
                "/ws?token=",
                "getUserMedia",
                "echoCancellation",
                "noiseSuppression",
                "autoGainControl",
                "iceServers",
                "getStats",
                "roundTripTime",
                "packetsLost",
                "jitter",
                '"seconds"',
                "addIceCandidate",
            ):
                assert needle in js, needle
            async with http.get(server.url + "/nothing") as resp:
                assert resp.status == 404
        finally:
            await client.close()
            await server.close()

    run(main)


def test_server_parameters_are_checked():
    agent = StubAgent()
    iface = LoopbackInterface()
    ok = {"secret": SECRET, "on_offer": agent.on_offer}
    for bad in (
        {"secret": b"short"},
        {"on_offer": "not callable"},
        {"max_message_bytes": 10},
        {"max_messages_per_s": 0},
        {"token_ttl_s": -5},
        {"rng": 7},
        {"allowed_origins": ["ftp://x"]},
    ):
        with pytest.raises(ParameterError):
            SignalingServer(iface, **{**ok, **bad})
    with pytest.raises(ParameterError):
        SignalingServer("not an iface", **ok)  # type: ignore[arg-type]

