"""voicelab.viz.nat: NAT figures and tables built from real virtual-network results.

Every figure here is drawn from a real run: a sans-IO VirtualNetwork probe, a plain SIP
call through a NAT in virtual time (traced_call) and a small SIP traversal matrix
(nat_matrix). The checks compare what the figures show with those results.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from voicelab import vnetcall
from voicelab.errors import ParameterError
from voicelab.natmatrix import nat_matrix, outcome_label, reference_outcome
from voicelab.net.stun import binding_request
from voicelab.rtp.packet import RtpPacket
from voicelab.rtp.rtcp import SenderReport
from voicelab.viz import nat as vn

PRESETS3 = ("open", "port-restricted-cone", "symmetric")


@pytest.fixture(scope="module")
def cells():
    # 2 methods x 3 x 3 presets, SIP in virtual time: about a second
    return nat_matrix(methods=("sip", "sip-relay"), presets=PRESETS3, seconds=0.5)


@pytest.fixture(scope="module")
def failing_call():
    """A plain SIP call from behind a port-restricted NAT to a public agent."""
    result, net = asyncio.run(vn.traced_call(method="sip", caller_nat="port-restricted-cone", agent_nat="open",
                                             seconds=0.5, quality=False, seed=2))
    return result, net


# ------------------------------------------------------------------ what a NAT does


def test_presets_table_measures_what_each_preset_configures():
    df = vn.nat_presets_table()
    assert list(df["preset"]) == ["open", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"]
    for row in df.to_dict("records"):
        if row["preset"] == "open":
            assert row["same_mapping_for_A_and_B"] and row["stranger_gets_in"] and row["port_kept"]
            continue
        eim = row["mapping"] == "endpoint-independent"
        assert row["same_mapping_for_A_and_B"] is eim, row
        assert row["port_kept"] is row["port_preservation"], row
        assert row["stranger_gets_in"] is (row["filtering"] == "endpoint-independent"), row
        assert row["A_other_port_gets_in"] is (row["filtering"] != "address-and-port-dependent"), row
        assert row["A_reply_gets_in"] is True, row
        assert row["B_reaches_A_address"] is eim, row  # the STUN answer is good for a peer
        assert row["seen_by_A"].startswith("198.51.100.10:")  # the NAT's public address


def test_presets_table_rejects_unknown_preset():
    with pytest.raises(ParameterError, match="unknown NAT preset"):
        vn.nat_presets_table(["open", "cone-ish"])


# ---------------------------------------------------------------------- topology


def test_topology_figure_draws_every_node_and_link():
    net, _ = vnetcall.build_topology("symmetric", "open")
    fig = vn.topology_figure(net)
    edges, link_labels, nodes = fig.data[:3]
    names = set(nodes.customdata)
    assert names == {"internet"} | set(net.hosts) | set(net.routers)
    assert list(edges.x).count(None) == len(net.hosts) + len(net.routers)
    text = " ".join(nodes.text)
    assert "NAT symmetric" in text and "router (no NAT)" in text and net.hosts["caller"].address in text
    assert sorted(link_labels.text) == sorted(f"{d['delay_ms']:g} ms" for d in vnetcall.DEFAULT_LINKS.values())


def test_topology_figure_rejects_non_network():
    with pytest.raises(ParameterError, match="VirtualNetwork"):
        vn.topology_figure({"hosts": {}})


# ------------------------------------------------------------------------ packets


def test_classify_payload_names_real_packets():
    assert vn.classify_payload(binding_request()) == "STUN Binding request"
    rtp = RtpPacket(payload_type=8, sequence_number=1, timestamp=160, ssrc=7, payload=b"\xd5" * 160)
    assert vn.classify_payload(bytes(rtp)) == "RTP PT 8"
    assert vn.classify_payload(bytes(SenderReport(ssrc=7))) == "RTCP SR"
    # 'A' (65) and 'I' (73) lie in RFC 7983's TURN channel range: SIP must still win
    assert vn.classify_payload(b"ACK sip:a@192.0.2.1 SIP/2.0\r\nVia: x\r\n\r\n") == "SIP ACK"
    assert vn.classify_payload(b"SIP/2.0 180 Ringing\r\n\r\n") == "SIP 180 Ringing"
    assert vn.classify_payload(b"\x40\x00\x00\x04abcd") == "TURN ChannelData"
    assert vn.classify_payload(b"\x16\xfe\xfd" + b"\0" * 20) == "DTLS handshake"
    assert vn.classify_payload(b"") == "empty"


def test_failing_sip_call_trace_shows_the_one_way_audio(failing_call):
    result, net = failing_call
    assert (result["caller_to_agent"], result["agent_to_caller"]) == (True, False)
    caller_private = net.hosts["caller"].address
    wan = net.routers["home"].wan_address
    table = vn.packet_table(net, packets=vn.key_packets(net))
    first_invite = table[table["what"] == "SIP INVITE"].iloc[0]
    assert first_invite["delivered"] and first_invite["arrived_src"].startswith(f"{wan}:")
    rtp = table[table["what"].str.startswith("RTP")]
    back = rtp[rtp["sender"] == "agent"].iloc[0]
    assert back["sent_dst"].startswith(f"{caller_private}:")  # the private address from the SDP
    assert not back["delivered"] and back["result"] == "dropped at internet: no route"
    forth = rtp[rtp["sender"] == "caller"].iloc[0]
    assert forth["delivered"] and forth["arrived_src"].startswith(f"{wan}:")
    assert f"home: src {caller_private}:" in forth["translations"]
    # every dropped packet in the whole trace agrees with the call's drop counter
    full = vn.packet_table(net)
    assert int((full["result"] == "dropped at internet: no route").sum()) == result["drops"]["no route"]


def test_packet_steps_show_addresses_before_and_after_the_nat(failing_call):
    _, net = failing_call
    table = vn.packet_table(net)
    caller_rtp = int(table[(table["sender"] == "caller") & table["what"].str.startswith("RTP")].iloc[0]["packet"])
    steps = vn.packet_steps(net, [caller_rtp])
    assert list(steps["action"]) == ["link", "nat", "link", "link", "link", "deliver"]
    nat = steps[steps["action"] == "nat"].iloc[0]
    assert nat["src"].split(":")[0] == net.hosts["caller"].address
    assert nat["out_src"].split(":")[0] == net.routers["home"].wan_address
    assert nat["src"].split(":")[1] == nat["out_src"].split(":")[1]  # the cone NAT kept the port
    assert (steps["t_ms"].diff().dropna() >= 0).all()
    agent_rtp = int(table[(table["sender"] == "agent") & table["what"].str.startswith("RTP")].iloc[0]["packet"])
    last = vn.packet_steps(net, [agent_rtp]).iloc[-1]
    assert (last["hop"], last["action"], last["dropped"]) == ("segment internet", "drop", True)
    assert "no route" in last["result"]


def test_step_through_has_one_frame_per_step(failing_call):
    _, net = failing_call
    ids = vn.key_packets(net, kinds=("SIP INVITE", "RTP"))
    steps = vn.packet_steps(net, ids)
    fig = vn.step_through(net, ids)
    assert len(fig.frames) == len(steps) == len(fig.layout.sliders[0].steps)
    dropped = steps.index[steps["dropped"]].tolist()
    assert dropped, "the failing call must show a drop"
    for i in range(len(steps)):
        marker = fig.frames[i].data[1].marker
        assert (marker.symbol == "x") is (i in dropped)
        assert f"packet {steps['packet'][i]}:" in fig.frames[i].data[2].text[0]


def test_packet_path_figure_colours_the_fate(failing_call):
    _, net = failing_call
    table = vn.packet_table(net)
    bad = int(table[~table["delivered"] & table["result"].str.contains("no route")].iloc[0]["packet"])
    good = int(table[table["delivered"]].iloc[0]["packet"])
    assert vn.packet_path_figure(net, bad).data[3].line.color == "#d62728"
    assert vn.packet_path_figure(net, good).data[3].line.color == "#2ca02c"


def test_packet_functions_reject_bad_input(failing_call):
    _, net = failing_call
    with pytest.raises(ParameterError, match="not in the trace"):
        vn.packet_table(net, packets=[10**9])
    with pytest.raises(ParameterError, match="TraceRecord"):
        vn.packet_table([{"packet_id": 1}])
    with pytest.raises(ParameterError, match="empty"):
        vn.packet_steps([])
    with pytest.raises(ParameterError, match="limit"):
        vn.key_packets(net, limit=0)


def test_traced_call_restores_build_topology_and_checks_method():
    original = vnetcall.build_topology
    with pytest.raises(ParameterError, match="unknown method"):
        asyncio.run(vn.traced_call(method="carrier-pigeon"))
    with pytest.raises(ParameterError, match="real time"):
        asyncio.run(vn.traced_call(method="webrtc-stun", virtual_time=True))
    with pytest.raises(ParameterError, match="preset"):
        asyncio.run(vn.traced_call(method="sip", caller_nat="cone-ish"))
    assert vnetcall.build_topology is original


# ------------------------------------------------------------------------- matrix


def _codes(fig, method):
    trace = next(t for t in fig.data if t.name == method)
    return trace


def test_heatmap_values_follow_the_cells(cells):
    fig = vn.matrix_heatmap(cells)
    assert [t.name for t in fig.data] == ["sip", "sip-relay"]
    for c in cells:
        t = _codes(fig, c["method"])
        i, j = PRESETS3.index(c["caller_nat"]), PRESETS3.index(c["agent_nat"])
        label = outcome_label(c["caller_to_agent"], c["agent_to_caller"])
        assert t.z[i][j] == vn.OUTCOMES.index(label)
        assert "expected" not in t.text[i][j]  # the lab reproduces the textbook matrix
    # plain SIP shows one-way cells, the relay none
    assert {v for row in _codes(fig, "sip").z for v in row} >= {1.0, 2.0}
    assert {v for row in _codes(fig, "sip-relay").z for v in row} == {3.0}


def test_heatmap_draws_the_cells_given_not_the_reference(cells):
    changed = copy.deepcopy(cells)
    cell = next(c for c in changed if (c["method"], c["caller_nat"], c["agent_nat"]) == ("sip", "symmetric", "open"))
    assert reference_outcome("symmetric", "open", "sip") == (True, False)
    cell["agent_to_caller"] = True  # pretend it had worked both ways
    fig = vn.matrix_heatmap(changed, methods=["sip"])
    t = fig.data[0]
    i, j = PRESETS3.index("symmetric"), PRESETS3.index("open")
    assert t.z[i][j] == vn.OUTCOMES.index("two-way")
    assert "expected c→a only" in t.text[i][j]
    assert "8/9 as expected" in fig.layout.annotations[0].text


def test_heatmap_leaves_cells_not_run_blank(cells):
    some = [c for c in cells if c["method"] == "sip" and c["agent_nat"] == "open"]
    fig = vn.matrix_heatmap(some, presets=PRESETS3)
    z = fig.data[0].z
    for i in range(3):
        for j in range(3):
            assert (z[i][j] is None) is (j != 0)


def test_matrix_frame_labels(cells):
    df = vn.matrix_frame(cells)
    assert len(df) == len(cells) and df["matches_reference"].all()
    row = df[(df["method"] == "sip") & (df["caller_nat"] == "open") & (df["agent_nat"] == "symmetric")].iloc[0]
    assert (row["outcome"], row["expected"]) == ("agent->caller only", "agent->caller only")


def test_matrix_functions_reject_bad_input(cells):
    with pytest.raises(ParameterError, match="no matrix cells"):
        vn.matrix_heatmap([])
    with pytest.raises(ParameterError, match="not in the cells"):
        vn.matrix_heatmap(cells, methods=["webrtc-turn"])
    with pytest.raises(ParameterError, match="lacks"):
        vn.matrix_frame([{"method": "sip"}])
    with pytest.raises(ParameterError, match="single dict"):
        vn.matrix_heatmap(cells[0])


# --------------------------------------------------------------------- relay cost


def test_relay_cost_follows_the_cells(cells):
    df = vn.relay_cost(cells, seconds=0.5)
    carried = [c for c in cells if c["caller_to_agent"] or c["agent_to_caller"]]
    assert len(df) == len(carried)
    relay = df[df["method"] == "sip-relay"]
    assert relay["relayed"].all() and (relay["relay_bytes"] > 0).all()
    assert (relay["added_delay_ms"] > 0).all()
    direct = df[df["method"] == "sip"]
    assert not direct["relayed"].any() and (direct["relay_bytes"] == 0).all() and (direct["added_delay_ms"] == 0).all()
    c = next(c for c in cells if (c["method"], c["caller_nat"], c["agent_nat"]) == ("sip-relay", "symmetric", "symmetric"))
    row = relay[(relay["caller_nat"] == "symmetric") & (relay["agent_nat"] == "symmetric")].iloc[0]
    assert row["relay_kbps"] == pytest.approx(c["relay_bytes"] * 8 / 0.5 / 1000)
    fig = vn.relay_cost_figure(cells, seconds=0.5)
    bars = [t for t in fig.data if t.x is not None and len(t.x) == len(df)]  # not the colour-legend entries
    assert list(bars[1].y) == list(df["added_delay_ms"])
    assert list(bars[2].y) == pytest.approx(list(df["relay_kbps"]))


def test_relay_cost_needs_audio(cells):
    silent = [c for c in cells if not (c["caller_to_agent"] or c["agent_to_caller"])]
    with pytest.raises(ParameterError, match="none of the results carried audio"):
        vn.relay_cost(silent)
    with pytest.raises(ParameterError, match="seconds"):
        vn.relay_cost(cells, seconds=0)


def test_relay_cost_figure_has_a_colour_legend_and_marks_unmeasured_delay():
    from voicelab.viz import nat as vn

    base = {"caller_to_agent": True, "agent_to_caller": True, "setup_ms": 30.0, "added_delay_ms": 0.0,
            "relay_bytes": 0, "seconds": 2.0}
    rows = [dict(base, method="sip-comedia", caller_nat="port-restricted-cone", agent_nat="open", path="direct",
                 **{"caller_to_agent.mouth_to_ear_ms": 100.0, "agent_to_caller.mouth_to_ear_ms": 101.0}),
            dict(base, method="webrtc-turn", caller_nat="symmetric", agent_nat="symmetric", path="relay",
                 relay_bytes=40000, added_delay_ms=20.0)]
    fig = vn.relay_cost_figure(rows)
    names = [t.name for t in fig.data if t.showlegend]
    assert any("direct path" in n for n in names) and any("relayed path" in n for n in names)
    m2e = [t for t in fig.data if t.name and t.name.startswith("mouth-to-ear")]
    assert m2e and all("not measured" in list(t.text) for t in m2e)


def test_step_storyboard_draws_every_packet_of_the_step_through(failing_call):
    """The static stand-in for the step-through: every packet's whole path, not its first step."""
    _, net = failing_call
    ids = vn.key_packets(net, kinds=("SIP INVITE", "RTP"))
    steps = vn.packet_steps(net, ids)
    fig = vn.step_storyboard(net, ids, cols=2)
    assert len(fig.layout.annotations) == len(ids)  # one titled panel per packet
    paths = [t for t in fig.data if t.mode == "lines" and t.line.width == 5]
    assert len(paths) == len(ids)
    dropped = steps.groupby("packet")["dropped"].any()
    assert [p.line.color == "#d62728" for p in paths] == [bool(dropped[i]) for i in ids]
    marks = [t for t in fig.data if t.mode == "markers" and t.marker.symbol in ("x", "circle-open")]
    assert sum(m.marker.symbol == "x" for m in marks) == int(dropped.sum())
    with pytest.raises(ParameterError):
        vn.step_storyboard(net, ids, cols=0)
