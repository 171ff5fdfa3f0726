"""Security and load robustness of the live agent (issue #11: "Security", "Connections and load").

* Digest nonces: the secret comes from the OS CSPRNG per agent, so an Authorization
  header captured from one agent is refused (401) by the same agent restarted on the
  same port with the same seed.
* Connections: idle and half-sent TCP connections are closed after a timeout, more than
  the cap are refused (closed at once, counted, one log line), and the agent still answers
  a normal call while its connection table is full of idle sockets.
"""

from __future__ import annotations

import asyncio

import pytest

from voicelab.calls import Agent
from voicelab.net.iface import free_port
from voicelab.sip.auth import DigestClient, DigestCredentials
from voicelab.sip.message import Request, Response, parse_message

from .test_agent_robustness import SDP, Client

REPLY_TIMEOUT_S = 3.0


async def _final(c: Client, call_id: str) -> Response:
    """The first final (>= 200) response for ``call_id`` (provisional ones skipped)."""
    while True:
        raw = await asyncio.wait_for(c.probe.replies.get(), REPLY_TIMEOUT_S)
        msg = parse_message(raw)
        if isinstance(msg, Response) and msg.call_id == call_id and msg.status_code >= 200:
            return msg


async def _replay_after_restart(deterministic: bool) -> tuple[int, int]:
    port = free_port(kind="udp")
    kw = dict(port=port, codecs=["pcmu"], speech="harvard", auth=("alice", "secret"), seed=7,
              deterministic_auth=deterministic)
    c = await Client.open(("127.0.0.1", port))  # one client socket: the replay's Via still reaches it
    try:
        async with Agent(**kw) as agent:
            raw = c.request("INVITE", call_id="replay-1", branch="replay1",
                            extra="Content-Type: application/sdp\r\n", body=SDP)
            invite = parse_message(raw)
            assert isinstance(invite, Request)
            c.transport.sendto(raw, agent.address)
            challenge = await _final(c, "replay-1")
            assert challenge.status_code == 401
            authorized = DigestClient(DigestCredentials("alice", "secret")).authorize(invite, challenge, branch="z9hG4bKreplay2")
            assert authorized is not None
            captured = bytes(authorized)  # what an eavesdropper keeps
            c.transport.sendto(captured, agent.address)
            first = (await _final(c, "replay-1")).status_code
        async with Agent(**kw) as agent:  # the restart: same port, same seed
            c.transport.sendto(captured, agent.address)
            replayed = (await _final(c, "replay-1")).status_code
    finally:
        c.close()
    return first, replayed


def test_captured_authorization_is_refused_after_a_restart():
    first, replayed = asyncio.run(_replay_after_restart(deterministic=False))
    assert first == 200  # the credentials were good
    assert replayed == 401  # the restarted agent has a new secret: the old nonce is worthless


def test_deterministic_auth_is_what_makes_the_secret_repeatable():
    """The opt-in for reproducible virtual-time runs: the same seed gives the same secret (so the replay passes)."""
    first, replayed = asyncio.run(_replay_after_restart(deterministic=True))
    assert (first, replayed) == (200, 200)
