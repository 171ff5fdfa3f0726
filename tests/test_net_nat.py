"""The sans-IO NAT model (voicelab.net.nat): RFC 4787 mapping, filtering, hairpinning,
timeouts, port preservation, presets, double NAT, and typed errors.

Every test drives :class:`Nat` with explicit ``now`` values: no clock, no sockets.
"""

from __future__ import annotations

import pytest

from voicelab.errors import ParameterError
from voicelab.net.nat import FILTERING_BEHAVIOURS, MAPPING_BEHAVIOURS, PRESETS, Nat, NatConfig

PUB = "198.51.100.10"
IN_A = ("192.168.1.10", 5000)
IN_B = ("192.168.1.11", 5000)
X1 = ("203.0.113.1", 3478)
X1_OTHER_PORT = ("203.0.113.1", 9999)
Y = ("203.0.113.2", 3478)

# The classic names from REFERENCE-FACTS.md (mapping, filtering).
REFERENCE = {
    "full-cone": ("endpoint-independent", "endpoint-independent"),
    "restricted-cone": ("endpoint-independent", "address-dependent"),
    "port-restricted-cone": ("endpoint-independent", "address-and-port-dependent"),
    "symmetric": ("address-and-port-dependent", "address-and-port-dependent"),
}


def nat(preset_or_cfg, seed=0, **changes) -> Nat:
    cfg = NatConfig.coerce(preset_or_cfg)
    if changes:
        cfg = cfg.with_(**changes)
    return Nat(cfg, PUB, seed=seed)


# ---------------------------------------------------------------------------------------
# presets and config
# ---------------------------------------------------------------------------------------


def test_presets_follow_the_reference_table():
    assert set(PRESETS) == {"open", *REFERENCE}
    for name, (mapping, filtering) in REFERENCE.items():
        cfg = NatConfig.preset(name)
        assert (cfg.mapping, cfg.filtering) == (mapping, filtering), name
        assert cfg.translate
        assert cfg.classic_name == name
    assert not NatConfig.preset("open").translate
    assert NatConfig.preset("open").classic_name == "open"


@pytest.mark.parametrize(
    "bad",
    [
        {"mapping": "cone"},
        {"filtering": "port-dependent"},
        {"port_preservation": "yes"},
        {"hairpinning": 1},
        {"mapping_timeout_s": 0},
        {"mapping_timeout_s": float("nan")},
        {"tcp_timeout_s": -5},
        {"port_range": (2000, 1000)},
        {"port_range": (0, 10)},
        {"port_range": (1, 70000)},
        {"port_range": "1-2"},
    ],
)
def test_bad_config_is_a_parameter_error(bad):
    with pytest.raises(ParameterError):
        NatConfig(**bad)


def test_unknown_preset_and_keys_name_the_valid_ones():
    with pytest.raises(ParameterError, match="full-cone"):
        NatConfig.preset("cone")
    with pytest.raises(ParameterError, match="valid names"):
        NatConfig.from_dict({"preset": "symmetric", "timeout": 3})
    with pytest.raises(ParameterError, match="valid names"):
        NatConfig.preset("symmetric").with_(hair=True)
    with pytest.raises(ParameterError):
        Nat("symmetric", "not-an-ip")
    with pytest.raises(ParameterError):
        Nat("symmetric", PUB, seed=-1)
    n = nat("full-cone")
    with pytest.raises(ParameterError):
        n.outbound("sctp", IN_A, X1, 0.0)
    with pytest.raises(ParameterError):
        n.outbound("udp", ("192.168.1.10", 70000), X1, 0.0)
    with pytest.raises(ParameterError):
        n.inbound("udp", X1, "198.51.100.10:5000", 0.0)


def test_config_round_trips_through_dict():
    cfg = NatConfig.preset("symmetric").with_(hairpinning=True, port_range=(20000, 20010))
    assert NatConfig.from_dict(cfg.to_dict()) == cfg
    assert NatConfig.from_dict({"preset": "restricted-cone", "mapping_timeout_s": 30}).mapping_timeout_s == 30.0
    assert NatConfig.coerce("full-cone") is PRESETS["full-cone"]


# ---------------------------------------------------------------------------------------
# mapping behaviour
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mapping", MAPPING_BEHAVIOURS)
def test_mapping_reuse_per_behaviour(mapping):
    n = nat(NatConfig(mapping=mapping, filtering="endpoint-independent"))
    to_x1 = n.outbound("udp", IN_A, X1, 0.0).src
    to_x1_again = n.outbound("udp", IN_A, X1, 0.1).src
    to_x1_other_port = n.outbound("udp", IN_A, X1_OTHER_PORT, 0.2).src
    to_y = n.outbound("udp", IN_A, Y, 0.3).src
    assert to_x1 == to_x1_again
    assert to_x1[0] == PUB
    assert (to_x1 == to_x1_other_port) == (mapping != "address-and-port-dependent")
    assert (to_x1 == to_y) == (mapping == "endpoint-independent")
    expected = {"endpoint-independent": 1, "address-dependent": 2, "address-and-port-dependent": 3}[mapping]
    assert len(n.mappings()) == expected == n.stats.mappings_created


def test_symmetric_gives_a_new_port_per_destination():
    n = nat("symmetric")
    ports = {n.outbound("udp", IN_A, ("203.0.113.1", 1000 + i), 0.0).src[1] for i in range(20)}
    assert len(ports) == 20
    lo, hi = NatConfig.preset("symmetric").port_range
    assert all(lo <= p <= hi for p in ports)


def test_port_preservation_and_collisions():
    n = nat("port-restricted-cone")
    a = n.outbound("udp", IN_A, X1, 0.0).src
    b = n.outbound("udp", IN_B, X1, 0.0).src  # same internal port, other host
    assert a == (PUB, 5000)
    assert b[0] == PUB and b[1] != 5000
    # without preservation the port is drawn from the range
    n2 = nat("port-restricted-cone", port_preservation=False, port_range=(40000, 40100))
    c = n2.outbound("udp", IN_A, X1, 0.0).src
    assert 40000 <= c[1] <= 40100


def test_port_allocation_is_seeded():
    def ports(seed):
        n = nat("symmetric", seed=seed)
        return [n.outbound("udp", IN_A, ("203.0.113.1", 1000 + i), 0.0).src[1] for i in range(10)]

    assert ports(7) == ports(7)
    assert ports(7) != ports(8)


def test_port_range_exhaustion_drops_with_reason():
    n = nat("symmetric", port_range=(40000, 40001))
    assert not n.outbound("udp", IN_A, ("203.0.113.1", 1), 0.0).dropped
    assert not n.outbound("udp", IN_A, ("203.0.113.1", 2), 0.0).dropped
    v = n.outbound("udp", IN_A, ("203.0.113.1", 3), 0.0)
    assert v.dropped and v.reason == "no free port"


def test_udp_and_tcp_have_separate_tables():
    n = nat("full-cone")
    u = n.outbound("udp", IN_A, X1, 0.0).src
    t = n.outbound("tcp", IN_A, X1, 0.0).src
    assert u == t == (PUB, 5000)  # both preserved: separate port spaces
    assert n.inbound("tcp", Y, u, 0.1).dst == IN_A
    assert len(n.mappings()) == 2


# ---------------------------------------------------------------------------------------
# filtering behaviour
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("filtering", FILTERING_BEHAVIOURS)
def test_filtering_of_unsolicited_inbound(filtering):
    n = nat(NatConfig(mapping="endpoint-independent", filtering=filtering))
    ext = n.outbound("udp", IN_A, X1, 0.0).src
    same = n.inbound("udp", X1, ext, 0.1)
    other_port = n.inbound("udp", X1_OTHER_PORT, ext, 0.1)
    other_host = n.inbound("udp", Y, ext, 0.1)
    assert not same.dropped and same.dst == IN_A and same.src == X1
    assert other_port.dropped == (filtering == "address-and-port-dependent")
    assert other_host.dropped == (filtering != "endpoint-independent")
    if other_host.dropped:
        assert other_host.reason == f"filtered ({filtering})"


def test_inbound_without_mapping_is_dropped():
    n = nat("full-cone")
    v = n.inbound("udp", X1, (PUB, 5000), 0.0)
    assert v.dropped and v.reason == "no mapping"
    n.outbound("udp", IN_A, X1, 0.0)
    assert n.inbound("udp", X1, ("198.51.100.99", 5000), 0.0).reason == "no mapping"  # not our address


def test_open_preset_translates_nothing():
    n = nat("open")
    assert n.outbound("udp", IN_A, X1, 0.0).src == IN_A
    v = n.inbound("udp", Y, IN_A, 0.0)
    assert not v.dropped and v.dst == IN_A


# ---------------------------------------------------------------------------------------
# hairpinning
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hairpinning", [True, False])
def test_hairpinning(hairpinning):
    n = nat("full-cone", hairpinning=hairpinning)
    ext_b = n.outbound("udp", IN_B, X1, 0.0).src  # B is reachable at ext_b
    v = n.outbound("udp", IN_A, ext_b, 0.1)  # A sends to B's public address
    if hairpinning:
        assert not v.dropped and v.hairpin
        assert v.dst == IN_B
        assert v.src[0] == PUB and v.src != IN_A  # REQ-9: the external source, not the private one
    else:
        assert v.dropped and v.reason == "hairpinning disabled"


def test_hairpin_is_filtered_like_inbound():
    n = nat("port-restricted-cone")
    ext_b = n.outbound("udp", IN_B, X1, 0.0).src
    v = n.outbound("udp", IN_A, ext_b, 0.1)
    assert v.dropped and v.reason.startswith("hairpin: filtered")
    ext_a = next(m.external for m in n.mappings() if m.internal == IN_A)
    n.outbound("udp", IN_B, ext_a, 0.2)  # B opens a permission for A's external address
    assert not n.outbound("udp", IN_A, ext_b, 0.3).dropped


# ---------------------------------------------------------------------------------------
# timeouts
# ---------------------------------------------------------------------------------------


def test_mapping_expires_after_idle_timeout_and_outbound_refreshes():
    n = nat("port-restricted-cone", mapping_timeout_s=30.0)
    ext = n.outbound("udp", IN_A, X1, 0.0).src
    assert not n.inbound("udp", X1, ext, 29.0).dropped
    # inbound traffic does not refresh: still expires 30 s after the last outbound packet
    assert n.inbound("udp", X1, ext, 30.5).reason == "no mapping"
    assert n.stats.mappings_expired == 1
    ext2 = n.outbound("udp", IN_A, X1, 31.0).src
    for t in (50.0, 70.0, 90.0):  # keep-alives every 20 s keep it
        assert n.outbound("udp", IN_A, X1, t).src == ext2
    assert not n.inbound("udp", X1, ext2, 119.0).dropped
    assert n.mappings(now=121.0) == []


def test_permission_expires_with_the_timeout():
    n = nat("port-restricted-cone", mapping_timeout_s=30.0)
    ext = n.outbound("udp", IN_A, X1, 0.0).src
    n.outbound("udp", IN_A, Y, 25.0)  # keeps the mapping alive, not X1's permission
    assert not n.inbound("udp", Y, ext, 40.0).dropped
    assert n.inbound("udp", X1, ext, 40.0).reason == "filtered (address-and-port-dependent)"


def test_tcp_uses_its_own_timeout():
    n = nat("full-cone", mapping_timeout_s=10.0, tcp_timeout_s=100.0)
    u = n.outbound("udp", IN_A, X1, 0.0).src
    t = n.outbound("tcp", IN_A, X1, 0.0).src
    assert n.inbound("udp", X1, u, 50.0).reason == "no mapping"
    assert not n.inbound("tcp", X1, t, 50.0).dropped


# ---------------------------------------------------------------------------------------
# double NAT
# ---------------------------------------------------------------------------------------


def test_double_nat_translates_twice_and_back():
    home = Nat("full-cone", "100.64.0.10", seed=1, name="home")
    cgn = Nat("port-restricted-cone", "198.51.100.1", seed=2, name="cgn")
    mid = home.outbound("udp", IN_A, X1, 0.0).src
    pub = cgn.outbound("udp", mid, X1, 0.0).src
    assert mid[0] == "100.64.0.10" and pub[0] == "198.51.100.1"
    back = home.inbound("udp", X1, cgn.inbound("udp", X1, pub, 0.1).dst, 0.1)
    assert back.dst == IN_A
    # the outer NAT's filter applies even though the inner one is a full cone
    assert cgn.inbound("udp", Y, pub, 0.1).dropped
