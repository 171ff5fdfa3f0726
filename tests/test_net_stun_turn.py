"""STUN and TURN: the sans-IO cores on a fake clock, the asyncio servers on loopback with
aioice's own client code, and the same TURN flows against coturn (skipped without it)."""

from __future__ import annotations

import asyncio
import contextlib
import struct

import numpy as np
import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import need_tool, run_clean
from voicelab.errors import DataUnavailableError, ParameterError, VoicelabError
from voicelab.net import coturn as coturn_mod
from voicelab.net.coturn import Coturn
from voicelab.net.iface import LoopbackInterface
from voicelab.net.stun import (
    StunServer,
    StunServerCore,
    UdpEndpointProtocol,
    binding_request,
    finalize,
    try_parse,
)
from voicelab.net.turn import (
    UDP_TRANSPORT,
    AllocationReleased,
    Datagram,
    RelayRequested,
    TurnServer,
    TurnServerCore,
    long_term_key,
)

CLIENT = ("192.0.2.10", 40000)
RELAY = ("198.51.100.1", 50000)
PEER = ("203.0.113.5", 6000)
REALM = "voicelab"


# ---------------------------------------------------------------------------------------
# STUN core
# ---------------------------------------------------------------------------------------


def _binding_request_with(raw_type: int, value: bytes) -> bytes:
    """A Binding request carrying one raw attribute aioice has no table row for."""
    msg = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    data = bytes(msg) + struct.pack("!HH", raw_type, len(value)) + value
    return stun.set_body_length(data, len(data) - 20)


@pytest.mark.parametrize("addr", [("192.0.2.7", 4000), ("2001:db8::7", 65535)])
def test_stun_binding_returns_source_address(addr):
    core = StunServerCore()
    tid = bytes(range(12))
    [(reply, to)] = core.handle(binding_request(transaction_id=tid), addr, now=1.0)
    msg = stun.parse_message(reply)  # also checks FINGERPRINT
    assert to == addr
    assert (msg.message_method, msg.message_class) == (stun.Method.BINDING, stun.Class.RESPONSE)
    assert msg.transaction_id == tid
    assert msg.attributes["XOR-MAPPED-ADDRESS"] == addr
    assert "FINGERPRINT" in msg.attributes
    assert core.stats.requests == 1 and core.stats.ignored == 0


def test_stun_garbage_is_ignored_and_counted():
    rng = np.random.default_rng(5)
    good = binding_request()
    bad_fingerprint = good[:-1] + bytes([good[-1] ^ 1])
    no_cookie = good[:4] + b"\x00\x00\x00\x00" + good[8:]
    response = finalize(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE))
    garbage = [b"", b"\x00", b"\x00" * 19, good[:-3], good + b"\x00", bad_fingerprint, no_cookie, response,
               b"\x40\x00\x00\x04abcd", rng.bytes(200)]
    core = StunServerCore()
    for g in garbage:
        assert core.handle(g, ("192.0.2.1", 1), now=0.0) == []
    assert core.stats.ignored == len(garbage)
    assert core.stats.requests == 0
    # still answers afterwards
    assert len(core.handle(good, ("192.0.2.1", 1), now=0.0)) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120), st.integers(0, 40))
def test_stun_core_never_raises(data, cut):
    core = StunServerCore()
    # random bytes, and random bytes behind a valid header
    header = struct.pack("!HHI12s", 0x0001, len(data), stun.COOKIE, b"x" * 12)
    for d in (data, header + data, (header + data)[: 20 + cut]):
        out = core.handle(d, ("192.0.2.1", 9), now=0.0)
        assert isinstance(out, list)


def test_stun_unknown_required_attribute_gets_420_optional_is_ignored():
    core = StunServerCore()
    [(reply, _)] = core.handle(_binding_request_with(0x0018, b"\x80\x00\x00\x00"), ("192.0.2.1", 9), now=0.0)
    msg = stun.parse_message(reply)
    assert msg.error_code == 420
    # UNKNOWN-ATTRIBUTES (0x000A) lists the type
    assert struct.pack("!HHH", 0x000A, 2, 0x0018) in reply
    [(reply, _)] = core.handle(_binding_request_with(0xC057, b"\x00\x01\x00\x00"), ("192.0.2.1", 9), now=0.0)
    assert stun.parse_message(reply).message_class == stun.Class.RESPONSE


def test_stun_binding_indication_not_answered():
    core = StunServerCore()
    ind = finalize(stun.Message(stun.Method.BINDING, stun.Class.INDICATION))
    assert core.handle(ind, ("192.0.2.1", 9), now=0.0) == []
    assert core.stats.indications == 1 and core.stats.ignored == 0


def test_stun_server_on_loopback_with_aioice_transaction():
    async def main():
        iface = LoopbackInterface()
        async with StunServer(iface) as server:
            await server.start("127.0.0.1")
            loop = asyncio.get_running_loop()
            transactions: dict[bytes, stun.Transaction] = {}

            def on_datagram(data, addr):
                msg = try_parse(data)
                if msg is not None and msg.transaction_id in transactions:
                    transactions[msg.transaction_id].response_received(msg, addr)

            proto = UdpEndpointProtocol(on_datagram, loop.create_future())
            transport, _ = await iface.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))

            class Sender:
                def send_stun(self, message, addr):
                    transport.sendto(bytes(message), addr)

            transport.sendto(b"not stun at all", server.address)
            request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
            tx = stun.Transaction(request, server.address, Sender())
            transactions[request.transaction_id] = tx
            response, addr = await tx.run()
            assert addr == server.address
            assert response.attributes["XOR-MAPPED-ADDRESS"] == transport.get_extra_info("sockname")[:2]
            assert server.stats.ignored == 1 and server.stats.requests >= 1
            transport.close()
            await proto.closed

    run_clean(main, timeout=10)


def test_stun_server_address_before_start_is_a_clear_error():
    with pytest.raises(ParameterError, match="start"):
        StunServer(LoopbackInterface()).address


# ---------------------------------------------------------------------------------------
# TURN core on a fake clock
# ---------------------------------------------------------------------------------------


def _parse(d: Datagram) -> stun.Message:
    msg = stun.parse_message(d.data)
    assert msg is not None
    return msg


class CoreClient:
    """A hand-made TURN client driving a TurnServerCore directly (no sockets)."""

    def __init__(self, core, src=CLIENT, user="test", password="test"):
        self.core, self.src, self.user, self.password = core, src, user, password
        self.nonce = None
        self.realm = None

    @property
    def key(self):
        return long_term_key(self.user, REALM, self.password)

    def build(self, method, attrs=None, *, sign=True, raw=()):
        msg = stun.Message(method, stun.Class.REQUEST)
        msg.attributes.update(attrs or {})
        if sign:
            msg.attributes.update(USERNAME=self.user, REALM=self.realm or REALM, NONCE=self.nonce or b"none")
            return msg, finalize(msg, key=self.key, extra=list(raw))
        return msg, finalize(msg, extra=list(raw))

    def request(self, method, attrs=None, *, now, sign=True, raw=()):
        if sign and self.nonce is None:
            challenge = self.request(method, attrs, now=now, sign=False)
            assert challenge.error_code == 401
            self.nonce, self.realm = challenge.attributes["NONCE"], challenge.attributes["REALM"]
        msg, data = self.build(method, attrs, sign=sign, raw=raw)
        out = self.core.handle_client(data, self.src, now)
        [reply] = out
        assert reply.addr == self.src and reply.via is None
        resp = _parse(reply)
        assert resp.transaction_id == msg.transaction_id
        if resp.error_code not in (401, 438) and sign:
            assert resp.check_message_integrity(self.key), "authenticated answers must be signed"
        return resp

    def allocate(self, *, now, relay=RELAY, lifetime=None):
        attrs = {"REQUESTED-TRANSPORT": UDP_TRANSPORT}
        if lifetime is not None:
            attrs["LIFETIME"] = lifetime
        if self.nonce is None:
            self.request(stun.Method.BINDING, now=now, sign=False)  # harmless warm-up
            challenge = self.request(stun.Method.ALLOCATE, attrs, now=now, sign=False)
            self.nonce, self.realm = challenge.attributes["NONCE"], challenge.attributes["REALM"]
        msg, data = self.build(stun.Method.ALLOCATE, attrs)
        assert self.core.handle_client(data, self.src, now) == []
        ev = self.core.next_event()
        assert ev == RelayRequested(self.src, 4)
        [reply] = self.core.relay_ready(self.src, relay, now)
        resp = _parse(reply)
        assert resp.check_message_integrity(self.key)
        return resp, data

    def send_indication(self, payload, peer, *, now):
        msg = stun.Message(stun.Method.SEND, stun.Class.INDICATION)
        msg.attributes.update({"XOR-PEER-ADDRESS": peer, "DATA": payload})
        return self.core.handle_client(finalize(msg), self.src, now)

    def channel_data(self, number, payload, *, now):
        return self.core.handle_client(struct.pack("!HH", number, len(payload)) + payload, self.src, now)


def _core(**kw):
    return TurnServerCore(realm=REALM, users={"test": "test", "other": "secret"}, seed=1, **kw)


def test_unauthenticated_allocate_gets_401_challenge():
    core = _core()
    c = CoreClient(core)
    resp = c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=0.0, sign=False)
    assert resp.error_code == 401
    assert resp.attributes["REALM"] == REALM and resp.attributes["NONCE"]
    assert "MESSAGE-INTEGRITY" not in resp.attributes
    assert core.next_event() is None


@pytest.mark.parametrize(
    "change, code",
    [
        ({"password": "wrong"}, 401),
        ({"user": "nobody"}, 401),
        ({"realm": "elsewhere"}, 401),
        ({"nonce": b"1234.forged"}, 438),
    ],
)
def test_bad_credentials_are_rejected(change, code):
    core = _core()
    c = CoreClient(core, user=change.get("user", "test"), password=change.get("password", "test"))
    c.request(stun.Method.BINDING, now=0.0, sign=False)
    challenge = c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=0.0, sign=False)
    c.nonce = change.get("nonce", challenge.attributes["NONCE"])
    c.realm = change.get("realm", REALM)
    msg, data = c.build(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
    [reply] = core.handle_client(data, c.src, 0.0)
    resp = _parse(reply)
    assert resp.error_code == code
    assert resp.attributes["REALM"] == REALM and resp.attributes["NONCE"]
    assert core.next_event() is None and core.stats.allocations == []


def test_integrity_without_username_is_400():
    core = _core()
    msg = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST)
    msg.attributes["REQUESTED-TRANSPORT"] = UDP_TRANSPORT
    [reply] = core.handle_client(finalize(msg, key=b"k" * 16), CLIENT, 0.0)
    assert _parse(reply).error_code == 400


def test_authenticated_allocate_succeeds_and_is_idempotent():
    core = _core()
    c = CoreClient(core)
    resp, data = c.allocate(now=10.0, lifetime=1200)
    assert resp.message_class == stun.Class.RESPONSE
    assert resp.attributes["XOR-RELAYED-ADDRESS"] == RELAY
    assert resp.attributes["XOR-MAPPED-ADDRESS"] == CLIENT
    assert resp.attributes["LIFETIME"] == 1200
    assert not resp.check_message_integrity(long_term_key("test", REALM, "wrong"))
    # retransmission: the same answer, no second relay
    [again] = core.handle_client(data, CLIENT, 10.5)
    assert stun.parse_message(again.data).transaction_id == resp.transaction_id
    assert core.next_event() is None
    # a new Allocate on the same 5-tuple: 437
    assert c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=11.0).error_code == 437
    assert core.allocation(CLIENT).relayed_address == RELAY


@pytest.mark.parametrize("requested, granted", [(None, 600), (30, 600), (1800, 1800), (10**6, 3600)])
def test_allocation_lifetime_is_clamped(requested, granted):
    c = CoreClient(_core())
    resp, _ = c.allocate(now=0.0, lifetime=requested)
    assert resp.attributes["LIFETIME"] == granted
    assert c.core.get_timer() == granted


def test_allocate_errors():
    core = _core(user_quota=1)
    c = CoreClient(core)
    assert c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": 6 << 24}, now=0.0).error_code == 442
    assert c.request(stun.Method.ALLOCATE, {"LIFETIME": 600}, now=0.0).error_code == 400
    resp = c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=0.0,
                     raw=[(0x001A, b"")])  # DONT-FRAGMENT: not supported
    assert resp.error_code == 420
    c.allocate(now=0.0)
    second = CoreClient(core, src=("192.0.2.11", 40000))
    msg = second.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=0.0)
    assert msg.error_code == 486
    assert core.stats.errors[442] == 1 and core.stats.errors[486] == 1


def test_relay_failure_answers_508():
    core = _core()
    c = CoreClient(core)
    c.request(stun.Method.BINDING, now=0.0, sign=False)
    ch = c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=0.0, sign=False)
    c.nonce = ch.attributes["NONCE"]
    _, data = c.build(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
    core.handle_client(data, CLIENT, 0.0)
    assert isinstance(core.next_event(), RelayRequested)
    [reply] = core.relay_failed(CLIENT, 0.0)
    assert _parse(reply).error_code == 508
    assert core.allocation(CLIENT) is None
    # a relay opened too late is handed back for closing
    assert core.relay_ready(CLIENT, RELAY, 0.1) == []
    assert core.next_event() == AllocationReleased(CLIENT, RELAY, "abandoned")


def test_requests_without_allocation_get_437_and_other_user_441():
    core = _core()
    c = CoreClient(core)
    for method, attrs in [
        (stun.Method.REFRESH, {"LIFETIME": 600}),
        (stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}),
        (stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": PEER}),
    ]:
        assert c.request(method, attrs, now=0.0).error_code == 437
    c.allocate(now=0.0)
    intruder = CoreClient(core, user="other", password="secret")
    assert intruder.request(stun.Method.REFRESH, {"LIFETIME": 600}, now=1.0).error_code == 441


def test_send_indication_needs_permission():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    assert c.send_indication(b"hello", PEER, now=1.0) == []
    assert core.allocation(CLIENT).dropped_no_permission == 1
    assert c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}, now=2.0).message_class == stun.Class.RESPONSE
    assert c.send_indication(b"hello", PEER, now=3.0) == [Datagram(b"hello", PEER, RELAY)]
    # permission is by IP: another port of the same host is allowed too
    other_port = (PEER[0], PEER[1] + 1)
    assert c.send_indication(b"x", other_port, now=3.0) == [Datagram(b"x", other_port, RELAY)]
    s = core.allocation(CLIENT)
    assert (s.bytes_to_peers, s.packets_to_peers, s.indication_packets) == (6, 2, 2)


def test_create_permission_with_several_peers_and_errors():
    core = _core(peer_filter=lambda peer: not peer[0].startswith("10."))
    c = CoreClient(core)
    c.allocate(now=0.0)
    other = ("203.0.113.9", 7)
    # two XOR-PEER-ADDRESS attributes (aioice's parser keeps only one: the core reads all)
    msg = stun.Message(stun.Method.CREATE_PERMISSION, stun.Class.REQUEST)
    msg.attributes.update({"XOR-PEER-ADDRESS": PEER, "USERNAME": "test", "REALM": REALM, "NONCE": c.nonce})
    second = stun.pack_xor_address(other, msg.transaction_id)
    data = finalize(msg, key=c.key, extra=[(0x0012, second)])
    [reply] = core.handle_client(data, CLIENT, 1.0)
    assert _parse(reply).message_class == stun.Class.RESPONSE
    assert c.send_indication(b"a", PEER, now=2.0) and c.send_indication(b"b", other, now=2.0)
    assert c.request(stun.Method.CREATE_PERMISSION, {}, now=3.0).error_code == 400
    assert c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": ("2001:db8::1", 5)}, now=3.0).error_code == 443
    assert c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": ("10.0.0.1", 5)}, now=3.0).error_code == 403


def test_peer_data_needs_permission_and_arrives_as_data_indication():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    assert core.handle_peer(RELAY, b"early", PEER, 1.0) == []
    c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}, now=2.0)
    [d] = core.handle_peer(RELAY, b"reply", PEER, 3.0)
    assert d.addr == CLIENT and d.via is None
    msg = _parse(d)
    assert (msg.message_method, msg.message_class) == (stun.Method.DATA, stun.Class.INDICATION)
    assert msg.attributes["DATA"] == b"reply" and msg.attributes["XOR-PEER-ADDRESS"] == PEER
    assert core.handle_peer(RELAY, b"stranger", ("203.0.113.99", 1), 3.0) == []
    s = core.allocation(CLIENT)
    assert (s.bytes_from_peers, s.packets_from_peers, s.dropped_no_permission) == (5, 1, 2)


def test_channel_bind_and_channel_data_both_ways():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    ok = c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4001, "XOR-PEER-ADDRESS": PEER}, now=1.0)
    assert ok.message_class == stun.Class.RESPONSE
    # the binding installed a permission: ChannelData goes out from the relayed address
    assert c.channel_data(0x4001, b"voice", now=2.0) == [Datagram(b"voice", PEER, RELAY)]
    # padding after the payload (allowed on UDP) is not relayed
    assert c.channel_data(0x4001, b"abc", now=2.0) == [Datagram(b"abc", PEER, RELAY)]
    assert core.handle_client(struct.pack("!HH", 0x4001, 3) + b"abc\x00", CLIENT, 2.0)[0].data == b"abc"
    # the peer's answer comes back as ChannelData on that channel
    [back] = core.handle_peer(RELAY, b"echo!", PEER, 3.0)
    assert back == Datagram(struct.pack("!HH", 0x4001, 5) + b"echo!", CLIENT, None)
    # unbound channel, truncated ChannelData: dropped
    before = core.stats.ignored
    assert c.channel_data(0x4002, b"zzz", now=3.0) == []
    assert core.handle_client(struct.pack("!HH", 0x4001, 10) + b"abc", CLIENT, 3.0) == []
    assert core.stats.ignored == before + 2
    s = core.allocation(CLIENT)
    assert s.channel_data_packets == 4 and s.bytes_to_peers == 11 and s.bytes_from_peers == 5


@pytest.mark.parametrize(
    "attrs",
    [
        {"CHANNEL-NUMBER": 0x3FFF, "XOR-PEER-ADDRESS": PEER},
        {"CHANNEL-NUMBER": 0x7FFF, "XOR-PEER-ADDRESS": PEER},
        {"CHANNEL-NUMBER": 0x4000},
        {"XOR-PEER-ADDRESS": PEER},
        {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": ("203.0.113.6", 6000)},  # number taken
        {"CHANNEL-NUMBER": 0x4005, "XOR-PEER-ADDRESS": PEER},  # peer taken
    ],
)
def test_channel_bind_errors_are_400(attrs):
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": PEER}, now=1.0)
    assert c.request(stun.Method.CHANNEL_BIND, attrs, now=2.0).error_code == 400
    # a refresh of the same binding is fine
    assert c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": PEER},
                     now=3.0).message_class == stun.Class.RESPONSE


def test_channel_expiry_and_cooldown():
    core = _core(max_lifetime=3600)
    c = CoreClient(core)
    c.allocate(now=0.0, lifetime=3600)
    c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": PEER}, now=0.0)
    # the binding's permission lasts 300 s, the channel 600 s: refresh the permission
    assert c.channel_data(0x4000, b"a", now=299.0)
    assert c.channel_data(0x4000, b"a", now=300.0) == []
    c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}, now=400.0)
    assert c.channel_data(0x4000, b"a", now=599.0)
    assert c.channel_data(0x4000, b"a", now=600.0) == []
    # with the channel gone, peer data falls back to a Data indication
    [d] = core.handle_peer(RELAY, b"x", PEER, 601.0)
    assert _parse(d).message_method == stun.Method.DATA
    other = ("203.0.113.6", 1)
    assert c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": other},
                     now=899.0).error_code == 400
    assert c.request(stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": other},
                     now=900.0).message_class == stun.Class.RESPONSE


def test_refresh_lifetime_zero_deletes_allocation():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}, now=1.0)
    resp = c.request(stun.Method.REFRESH, {"LIFETIME": 0}, now=5.0)
    assert resp.message_class == stun.Class.RESPONSE and resp.attributes["LIFETIME"] == 0
    assert core.next_event() == AllocationReleased(CLIENT, RELAY, "deleted")
    assert core.allocation(CLIENT) is None and core.get_timer() is None
    assert c.send_indication(b"late", PEER, now=6.0) == []
    assert core.handle_peer(RELAY, b"late", PEER, 6.0) == []
    assert c.request(stun.Method.REFRESH, {"LIFETIME": 600}, now=7.0).error_code == 437
    [stats] = core.stats.allocations
    assert (stats.created_at, stats.closed_at) == (0.0, 5.0)
    # the 5-tuple is free again
    c2 = CoreClient(core)
    c2.nonce, c2.realm = c.nonce, c.realm
    assert c2.allocate(now=8.0, relay=("198.51.100.1", 50002))[0].message_class == stun.Class.RESPONSE


def test_allocation_and_permission_expire_on_the_clock():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=100.0)
    c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": PEER}, now=100.0)
    # permission: 300 s
    assert c.send_indication(b"a", PEER, now=399.9)
    assert c.send_indication(b"a", PEER, now=400.0) == []
    # refresh extends the allocation (lifetime counted from the refresh)
    assert c.request(stun.Method.REFRESH, {"LIFETIME": 600}, now=500.0).attributes["LIFETIME"] == 600
    assert core.get_timer() == 1100.0
    core.handle_timer(1099.9)
    assert core.next_event() is None
    core.handle_timer(1100.0)
    assert core.next_event() == AllocationReleased(CLIENT, RELAY, "expired")
    assert core.allocation(CLIENT) is None
    assert c.request(stun.Method.REFRESH, {}, now=1101.0).error_code == 437


def test_stale_nonce_gets_438_then_retry_succeeds():
    core = _core(nonce_lifetime=60)
    c = CoreClient(core)
    c.allocate(now=0.0)
    resp = c.request(stun.Method.REFRESH, {"LIFETIME": 600}, now=61.0)
    assert resp.error_code == 438 and resp.attributes["NONCE"] != c.nonce
    c.nonce = resp.attributes["NONCE"]
    assert c.request(stun.Method.REFRESH, {"LIFETIME": 600}, now=61.0).message_class == stun.Class.RESPONSE


def test_nonce_is_bound_to_the_client_address():
    core = _core()
    a = CoreClient(core)
    a.allocate(now=0.0)
    b = CoreClient(core, src=("192.0.2.99", 1))
    b.nonce, b.realm = a.nonce, a.realm
    assert b.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, now=1.0).error_code == 438


def test_core_garbage_never_raises_and_is_counted():
    core = _core()
    c = CoreClient(core)
    c.allocate(now=0.0)
    base = core.stats.ignored
    junk = [b"", b"\x40", b"\x40\x00\x00", np.random.default_rng(3).bytes(64), binding_request()[:-2],
            finalize(stun.Message(stun.Method.ALLOCATE, stun.Class.RESPONSE)),
            finalize(stun.Message(stun.Method.SEND, stun.Class.INDICATION))]
    for j in junk:
        assert core.handle_client(j, CLIENT, 1.0) == []
    assert core.stats.ignored == base + len(junk)
    assert core.handle_peer(("198.51.100.1", 1), b"x", PEER, 1.0) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=100), st.sampled_from([0x0003, 0x0004, 0x0008, 0x0009, 0x0016]))
def test_turn_core_never_raises(data, method):
    core = _core()
    header = struct.pack("!HHI12s", method, len(data), stun.COOKIE, b"y" * 12)
    for d in (data, header + data, b"\x40\x00" + data):
        assert isinstance(core.handle_client(d, CLIENT, 0.0), list)
        assert isinstance(core.handle_peer(RELAY, d, PEER, 0.0), list)


def test_core_rejects_bad_configuration():
    with pytest.raises(ParameterError, match="realm"):
        TurnServerCore(realm="", users={"a": "b"})
    with pytest.raises(ParameterError, match="users"):
        TurnServerCore(realm="r", users={"a": 1})
    with pytest.raises(ParameterError, match="default_lifetime"):
        TurnServerCore(realm="r", users={}, default_lifetime=0)


# ---------------------------------------------------------------------------------------
# Live: aioice's TURN client against our server and against coturn
# ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def turn_server(kind):
    if kind == "voicelab":
        async with TurnServer(LoopbackInterface(), users={"test": "test"}, seed=7) as server:
            await server.start("127.0.0.1")
            yield server.address, server
    else:
        async with Coturn(user="test", password="test", realm=REALM) as server:
            yield server.address, server


def _need(kind):
    if kind == "coturn":
        need_tool("turnserver", "coturn")


class ClientProtocol:
    """What the application sees through aioice's TurnTransport."""

    def __init__(self):
        self.received: asyncio.Queue = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self.received.put_nowait((exc, None))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _peer(iface):
    q: asyncio.Queue = asyncio.Queue()
    proto = UdpEndpointProtocol(lambda d, a: q.put_nowait((d, a)), asyncio.get_running_loop().create_future())
    transport, _ = await iface.create_datagram_endpoint(lambda: proto, local_addr=("127.0.0.1", 0))
    return transport, proto, q


@pytest.mark.parametrize("kind", ["voicelab", "coturn"])
def test_aioice_turn_client_relays_through(kind):
    _need(kind)

    async def main():
        iface = LoopbackInterface()
        async with turn_server(kind) as (address, server):
            transport, proto = await create_turn_endpoint(ClientProtocol, address, "test", "test", lifetime=600)
            relayed = transport.get_extra_info("sockname")
            assert relayed[0] == "127.0.0.1" and relayed[1] != address[1]
            ptransport, pproto, pq = await _peer(iface)
            peer = ptransport.get_extra_info("sockname")[:2]
            for i in range(3):
                transport.sendto(b"ping %d" % i, peer)
                data, src = await asyncio.wait_for(pq.get(), 5)
                assert data == b"ping %d" % i and src == relayed
                ptransport.sendto(b"pong %d" % i, relayed)
                data, src = await asyncio.wait_for(proto.received.get(), 5)
                assert data == b"pong %d" % i and src == peer
            transport.close()
            assert await asyncio.wait_for(proto.lost, 5) is None
            if kind == "voicelab":
                [stats] = server.stats.allocations
                assert stats.relayed_address == relayed and stats.closed_at is not None
                assert (stats.packets_to_peers, stats.bytes_to_peers) == (3, 18)
                assert (stats.packets_from_peers, stats.bytes_from_peers) == (3, 18)
                assert stats.channel_data_packets == 6  # aioice binds a channel at once
                assert server._relays == {}
            ptransport.close()
            await pproto.closed

    run_clean(main, timeout=20)


@pytest.mark.parametrize("kind", ["voicelab", "coturn"])
@pytest.mark.parametrize("user, password", [("test", "wrong"), ("nobody", "test"), (None, None)])
def test_aioice_turn_client_bad_credentials_are_refused(kind, user, password):
    _need(kind)

    async def main():
        async with turn_server(kind) as (address, server):
            with pytest.raises(stun.TransactionFailed) as info:
                await create_turn_endpoint(ClientProtocol, address, user, password)
            assert info.value.response.error_code == 401
            if kind == "voicelab":
                assert server.stats.allocations == [] and server._relays == {}

    run_clean(main, timeout=20)


def test_turn_server_closes_relay_when_allocation_expires():
    """The adapter's timer (on the interface's clock) ends allocations and frees their sockets."""

    async def main():
        iface = LoopbackInterface()
        async with TurnServer(iface, default_lifetime=0.05, max_lifetime=0.05) as server:
            await server.start("127.0.0.1")
            async with RawClient(iface, server.address) as c:
                m = await c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
                assert m.attributes["LIFETIME"] == 1  # whole seconds on the wire, rounded up
                [(transport, proto)] = server._relays.values()
                await asyncio.wait_for(proto.closed, 5)
                assert server._relays == {}
                [stats] = server.stats.allocations
                assert stats.closed_at - stats.created_at >= 0.05
                assert (await c.request(stun.Method.REFRESH, {"LIFETIME": 600})).error_code == 437

    run_clean(main, timeout=10)


class RawClient:
    """A hand-made TURN client on a loopback socket, to compare servers message by message."""

    def __init__(self, iface, server, user="test", password="test"):
        self.iface, self.server, self.user, self.password = iface, server, user, password
        self.pending: dict[bytes, asyncio.Future] = {}
        self.other: asyncio.Queue = asyncio.Queue()
        self.realm = None
        self.nonce = None

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self.proto = UdpEndpointProtocol(self._rx, loop.create_future())
        self.transport, _ = await self.iface.create_datagram_endpoint(lambda: self.proto, local_addr=("127.0.0.1", 0))
        return self

    async def __aexit__(self, *exc):
        self.transport.close()
        await self.proto.closed

    def _rx(self, data, addr):
        m = try_parse(data)
        if m is not None and m.transaction_id in self.pending:
            fut = self.pending.pop(m.transaction_id)
            if not fut.done():
                fut.set_result(m)
        else:
            self.other.put_nowait(data)

    def send(self, data):
        self.transport.sendto(data, self.server)

    async def request(self, method, attrs=None, *, sign=True):
        if sign and self.nonce is None:
            challenge = await self.request(method, attrs, sign=False)
            self.realm, self.nonce = challenge.attributes["REALM"], challenge.attributes["NONCE"]
        msg = stun.Message(method, stun.Class.REQUEST)
        msg.attributes.update(attrs or {})
        key = None
        if sign:
            msg.attributes.update(USERNAME=self.user, REALM=self.realm, NONCE=self.nonce)
            key = long_term_key(self.user, self.realm, self.password)
        data = finalize(msg, key=key)
        fut = asyncio.get_running_loop().create_future()
        self.pending[msg.transaction_id] = fut
        for timeout in (0.25, 0.5, 1.0):  # RFC 5389 style retransmission on loopback
            self.send(data)
            done, _ = await asyncio.wait({fut}, timeout=timeout)
            if done:
                return fut.result()
        raise AssertionError(f"no answer to {method.name}")

    def send_indication(self, payload, peer):
        m = stun.Message(stun.Method.SEND, stun.Class.INDICATION)
        m.attributes.update({"XOR-PEER-ADDRESS": peer, "DATA": payload})
        self.send(finalize(m))


def _outcome(msg):
    return "ok" if msg.message_class == stun.Class.RESPONSE else msg.error_code


# What RFC 5389/5766 prescribe, and what both servers were seen to do.
EXPECTED_FLOW = {
    "allocate_unauthenticated": (401, True),
    "allocate_bad_password": (401, True),
    "allocate_forged_nonce": (438, True),
    "allocate_without_transport": 400,
    "refresh_without_allocation": 437,
    "allocate": "ok",
    "allocate_again": 437,
    "permission_without_peer": 400,
    "permission_ipv6_peer": 443,
    "channel_number_out_of_range": 400,
    "channel_bind": "ok",
    "channel_taken_by_other_peer": 400,
    "peer_on_other_channel": 400,
    "binding_on_turn_port": "ok",
    "send_without_permission_dropped": True,
    "peer_without_permission_dropped": True,
    "peer_data_as_data_indication": True,
    "peer_data_as_channel_data": True,
    "refresh_lifetime_zero": ("ok", 0),
}


async def _run_flow(address):
    iface = LoopbackInterface()
    seen = {}
    async with RawClient(iface, address) as c, RawClient(iface, address, password="wrong") as bad, \
            RawClient(iface, address) as forged:
        m = await c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT}, sign=False)
        seen["allocate_unauthenticated"] = (_outcome(m), "REALM" in m.attributes and "NONCE" in m.attributes)
        m = await bad.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
        seen["allocate_bad_password"] = (_outcome(m), "NONCE" in m.attributes)
        forged.realm, forged.nonce = REALM, b"0123456789abcdef"
        m = await forged.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
        seen["allocate_forged_nonce"] = (_outcome(m), "NONCE" in m.attributes)
        seen["allocate_without_transport"] = _outcome(await c.request(stun.Method.ALLOCATE, {"LIFETIME": 600}))
        seen["refresh_without_allocation"] = _outcome(await c.request(stun.Method.REFRESH, {"LIFETIME": 600}))
        m = await c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
        seen["allocate"] = _outcome(m)
        relayed = m.attributes["XOR-RELAYED-ADDRESS"]
        m = await c.request(stun.Method.ALLOCATE, {"REQUESTED-TRANSPORT": UDP_TRANSPORT})
        seen["allocate_again"] = _outcome(m)
        seen["permission_without_peer"] = _outcome(await c.request(stun.Method.CREATE_PERMISSION, {}))
        seen["permission_ipv6_peer"] = _outcome(
            await c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": ("::1", 9)}))
        seen["channel_number_out_of_range"] = _outcome(await c.request(
            stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x3000, "XOR-PEER-ADDRESS": ("127.0.0.1", 9)}))
        seen["binding_on_turn_port"] = _outcome(await c.request(stun.Method.BINDING, sign=False))

        ptransport, pproto, pq = await _peer(iface)
        peer = ptransport.get_extra_info("sockname")[:2]
        # Unpermitted traffic first, then permitted traffic: on loopback the order holds,
        # so "only the second arrived" proves the first was dropped, without waiting.
        c.send_indication(b"too early", peer)
        ptransport.sendto(b"peer too early", relayed)
        await c.request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": peer})
        c.send_indication(b"allowed", peer)
        data, _ = await asyncio.wait_for(pq.get(), 5)
        seen["send_without_permission_dropped"] = data == b"allowed"
        ptransport.sendto(b"peer allowed", relayed)
        ind = try_parse(await asyncio.wait_for(c.other.get(), 5))
        seen["peer_without_permission_dropped"] = ind.attributes.get("DATA") == b"peer allowed"
        seen["peer_data_as_data_indication"] = (ind.message_method == stun.Method.DATA
                                                and ind.attributes["XOR-PEER-ADDRESS"] == peer)
        seen["channel_bind"] = _outcome(await c.request(
            stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": peer}))
        seen["channel_taken_by_other_peer"] = _outcome(await c.request(
            stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4000, "XOR-PEER-ADDRESS": (peer[0], 9)}))
        seen["peer_on_other_channel"] = _outcome(await c.request(
            stun.Method.CHANNEL_BIND, {"CHANNEL-NUMBER": 0x4001, "XOR-PEER-ADDRESS": peer}))
        ptransport.sendto(b"odd-length", relayed)

        async def channel_data() -> bytes:  # skip a late Data indication (a retransmission under load)
            while True:
                msg = await c.other.get()
                if msg[:1] and 0x40 <= msg[0] <= 0x7F:  # RFC 8656 12.4: ChannelData starts 0b01
                    return msg

        chan = await asyncio.wait_for(channel_data(), 5)
        seen["peer_data_as_channel_data"] = chan[:4] == struct.pack("!HH", 0x4000, 10) and chan[4:14] == b"odd-length"
        m = await c.request(stun.Method.REFRESH, {"LIFETIME": 0})
        seen["refresh_lifetime_zero"] = (_outcome(m), m.attributes.get("LIFETIME"))
        ptransport.close()
        await pproto.closed
    return seen


@pytest.mark.parametrize("kind", ["voicelab", "coturn"])
def test_same_call_flow_same_answers(kind):
    """The same request sequence gives the RFC answers on our server and on coturn."""
    _need(kind)

    async def main():
        async with turn_server(kind) as (address, _):
            seen = await _run_flow(address)
        assert seen == EXPECTED_FLOW

    run_clean(main, timeout=20)


# ---------------------------------------------------------------------------------------
# Coturn wrapper
# ---------------------------------------------------------------------------------------


def test_coturn_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(coturn_mod.shutil, "which", lambda exe: None)

    async def main():
        with pytest.raises(DataUnavailableError, match="coturn"):
            async with Coturn():
                pass

    run_clean(main, timeout=5)


def test_coturn_that_exits_early_is_reported_with_its_log():
    need_tool("turnserver", "coturn")

    async def main():
        with pytest.raises(VoicelabError, match="exited") as info:
            async with Coturn(extra_args=("--no-such-option",)):
                pass
        assert "Help" in str(info.value)  # coturn's usage text, quoted from its log

    run_clean(main, timeout=10)


def test_coturn_rejects_non_loopback_host():
    with pytest.raises(ParameterError, match="loopback"):
        Coturn(host="192.0.2.1")
