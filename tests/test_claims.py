"""Each published claim is an experiment with a verdict, evidence with n and intervals, and its conditions."""

from __future__ import annotations

import pytest

from voicelab import claims
from voicelab.cost import Prices
from voicelab.errors import ParameterError

VERDICTS = ("holds", "holds only", "does not hold here")


def _check(r: claims.ClaimResult) -> None:
    assert r.claim in claims.CLAIMS.values()
    assert r.verdict.startswith(VERDICTS), r.verdict
    assert r.evidence and r.conditions and len(r.table)
    assert set(r.row()) == {"claim", "verdict", "n", "evidence", "conditions"}


def test_cost_claim_depends_on_the_prices_given():
    cheap = claims.cost()
    _check(cheap)
    assert "example prices" in cheap.verdict  # no price is presented as a fact
    # with a TURN price above the break-even, relayed WebRTC costs more than the carrier
    dear = claims.cost(prices=Prices(carrier_per_min=0.001, turn_per_gb=50.0, egress_per_gb=0.0, label="test"))
    t = dear.table.set_index("path")["total"]
    assert t["browser: WebRTC Opus 24k, via TURN"] > t["phone: carrier + SIP trunk, G.711"]


def test_sbc_for_nat_claim_from_the_nat_matrix():
    r = claims.sbc_for_nat(presets=("open", "port-restricted-cone", "symmetric"), seconds=0.5)
    _check(r)
    both = r.table.groupby("method")["both_ways"].sum()
    assert both["sip-relay"] == 9 and both["sip"] < 9
    assert r.verdict.startswith("holds")


def test_opus_bitrate_claim_is_a_paired_study(natural_env):
    r = claims.opus_bitrate(n=2, seconds=2.0, bitrates=(8000, 16000, 24000, 48000))
    _check(r)
    assert "indicative only at n = 2" in r.verdict
    assert any("48k - 24k" in e for e in r.evidence)
    with pytest.raises(ParameterError):
        claims.opus_bitrate(n=1)
