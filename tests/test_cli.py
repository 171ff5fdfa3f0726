"""The command line: JSON contracts, determinism, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from voicelab.cli import main


def run(capsys, *argv):
    """Run the CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        rc = main(list(argv))
    except SystemExit as exc:  # argparse errors exit through SystemExit
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


SIM = ["simulate", "--speech", "harvard", "--json"]


def test_simulate_json_has_contract_fields(capsys):
    rc, out, err = run(capsys, *SIM, "--codec", "pcmu", "--loss", "0.02", "--jitter-ms", "5", "--seed", "3")
    assert rc == 0, err
    d = json.loads(out)
    for k in ("pesq_nb", "pesq_wb", "stoi", "mouth_to_ear_ms", "mouth_to_ear_true_ms", "loss_rate", "late_loss_rate",
              "playout_delay_ms", "r_factor", "mos_cqe", "bitrate_kbps_wire", "scenario"):
        assert k in d, k
    assert d["scenario"]["codec"] == "pcmu"


def test_simulate_twice_byte_identical():
    cmd = [sys.executable, "-m", "voicelab", *SIM, "--codec", "g726", "--bitrate", "32000", "--loss", "0.05", "--burst", "2", "--jitter-ms", "10", "--seed", "9"]
    a = subprocess.run(cmd, capture_output=True, check=True).stdout
    b = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert a == b and len(a) > 100


@pytest.fixture
def wavs(tmp_path):
    rate = 16000
    t = np.arange(rate * 2) / rate
    good = 0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    p = {}
    p["silent"] = tmp_path / "silent.wav"
    sf.write(p["silent"], np.zeros(rate * 2), rate, subtype="PCM_16")
    p["corrupt"] = tmp_path / "corrupt.wav"
    p["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    p["rate"] = tmp_path / "rate12k.wav"
    sf.write(p["rate"], good[:12000], 12000, subtype="PCM_16")
    p["missing"] = tmp_path / "nope.wav"
    return p


BAD = [
    (["simulate", "--input", "{missing}"], "nope.wav"),
    (["simulate", "--input", "{corrupt}"], "corrupt.wav"),
    (["simulate", "--input", "{rate}"], "12000"),
    (["simulate", "--input", "{silent}"], "silent"),
    (["simulate", "--codec", "g999"], "g999"),
    (["simulate", "--loss", "1.5"], "1.5"),
    (["simulate", "--loss", "0.6", "--burst", "1.2"], "burst"),
    (["simulate", "--codec", "g726", "--bitrate", "33000"], "33000"),
    (["simulate", "--jitter-buffer", "elastic"], "elastic"),
    (["metrics", "{missing}", "{silent}"], "nope.wav"),
    (["metrics", "{silent}", "{silent}"], "silent"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_error(capsys, wavs, argv, needle):
    argv = [a.format(**wavs) for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc not in (0, None)
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]


def test_bad_input_subprocess_no_traceback(wavs):
    p = subprocess.run([sys.executable, "-m", "voicelab", "simulate", "--input", str(wavs["corrupt"])], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.startswith("voicelab: error:")


def test_codecs_json_lists_all(capsys):
    rc, out, err = run(capsys, "codecs", "--json")
    assert rc == 0
    rows = json.loads(out)
    names = {r["name"] for r in rows}
    assert {"pcmu", "pcma", "g722", "g723", "g726", "g729", "amr-nb", "opus", "l16"} <= names
    pcmu = next(r for r in rows if r["name"] == "pcmu")
    assert pcmu["payload_type"] == 0 and pcmu["rtpmap"] == "PCMU/8000"


def test_metrics_command_scores_identical_files(capsys, natural_speech_dir):
    f = natural_speech_dir / "cmu_arctic_aew_a0001.wav"
    rc, out, err = run(capsys, "metrics", str(f), str(f), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["pesq_wb"] == pytest.approx(4.644, abs=0.002)
    assert d["pesq_nb"] == pytest.approx(4.549, abs=0.002)
    assert abs(d["delay_ms"]) < 0.1


def test_metrics_command_matches_the_pesq_package_on_its_reference_pair(capsys, natural_speech_dir):
    """Narrowband PESQ of 16 kHz files is scored at 16 kHz, as the pesq package does
    (its README: 1.6072 NB, 1.0832 WB on this pair); resampling to 8 kHz first gave 1.665."""
    import pesq as pesqlib

    ref, deg = natural_speech_dir / "pesq_ref_speech_16k.wav", natural_speech_dir / "pesq_ref_speech_bab0dB_16k.wav"
    if not (ref.exists() and deg.exists()):
        pytest.skip("the pesq package's reference pair is not in the speech folder")
    rc, out, err = run(capsys, "metrics", str(ref), str(deg), "--json")
    assert rc == 0, err
    d = json.loads(out)
    r, rate = sf.read(ref, dtype="float64")
    g, _ = sf.read(deg, dtype="float64")
    assert d["pesq_nb"] == pytest.approx(pesqlib.pesq(rate, r, g, "nb"), abs=1e-3)
    assert d["pesq_wb"] == pytest.approx(pesqlib.pesq(rate, r, g, "wb"), abs=1e-3)
    assert d["pesq_nb_sample_rate"] == rate == 16000


def test_doctor_json(capsys):
    rc, out, err = run(capsys, "doctor", "--json")
    assert rc == 0
    d = json.loads(out)
    assert any(t["tool"] == "bcg729" for t in d["tools"])


def test_sweep_command_writes_table_and_resumes(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    out = tmp_path / "out.csv"
    spec.write_text(
        "base: {speech: harvard, max_speech_s: 3}\n"
        "grid: {codec: [pcmu, g722]}\n"
        f"repeats: 1\nseed: 2\njournal: {tmp_path / 'j.jsonl'}\noutput: {out}\n"
    )
    rc, _, err = run(capsys, "sweep", str(spec))
    assert rc == 0, err
    import pandas as pd

    df = pd.read_csv(out)
    assert sorted(df["codec"]) == ["g722", "pcmu"] and df["error"].isna().all()
    first = (tmp_path / "j.jsonl").read_text()
    rc, _, err = run(capsys, "sweep", str(spec))
    assert rc == 0 and (tmp_path / "j.jsonl").read_text() == first  # nothing rerun


BAD_SWEEPS = [
    ("grid:\n  - codec\n", "grid"),
    ("grid: {codec: [pcmu]}\nrepeats: abc\n", "repeats"),
    ("grid: {codec: [pcmu]}\nseed: -3\n", "seed"),
    ("grid: {codec: [pcmu]}\nworkers: -1\n", "workers"),
    ("grid: {channel.nosuch: [1]}\n", "nosuch"),
    ("base: {level_db: abc}\n", "level_db"),
    ("grid: {codec: [pcmu\n", "YAML"),
    ("colour: blue\n", "colour"),
]


@pytest.mark.parametrize("text,needle", BAD_SWEEPS, ids=[n for _, n in BAD_SWEEPS])
def test_bad_sweep_files_one_line_error(capsys, tmp_path, text, needle):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    rc, out, err = run(capsys, "sweep", str(spec), "--journal", str(tmp_path / "j.jsonl"))
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and needle in lines[0], err


def test_sip_parse_json_contract(capsys):
    from .conftest import REPO, need

    conf = REPO.parent / "shared" / "conformance" / "rfc4475"
    need(conf.is_dir(), "SIP torture messages not found at ../shared/conformance")
    rc, out, err = run(capsys, "sip", "parse", str(conf / "badinv01.dat"), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["valid"] is False and d["kind"] == "request" and d["reply_status"] == 400 and d["error"]
    rc, out, err = run(capsys, "sip", "parse", str(conf / "wsinv.dat"), "--json")
    d = json.loads(out)
    assert d["valid"] is True and d["reply_status"] is None and d["error"] is None


@pytest.mark.parametrize("argv, message", [
    (["call", "--transport", "webrtc", "--srtp"], "only apply to --transport sip"),
    (["call", "--transport", "ws", "--codec", "opus"], "use --codec pcmu"),
    (["call", "--tcp-recovery", "rto"], "only applies to --transport ws"),
    (["call", "--virtual-time"], "needs --net vnet"),
    (["call", "--auth", "nopassword"], "USER:PASS"),
    (["call", "--net", "vnet", "--transport", "ws"], "--net vnet runs the lab's SIP"),
    (["agent", "serve", "--sip", "nowhere"], "HOST:PORT"),
    (["agent", "serve", "--mode", "shout"], "unknown agent mode"),
    (["agent", "serve", "--max-lag-ms", "0"], "--max-lag-ms"),
    (["agent", "serve", "--max-rate", "-5"], "--max-rate"),
    (["agent", "serve", "--mode", "signalling:soon"], "signalling:SECONDS"),
    (["agent", "serve", "--tick-ms", "500"], "tick-ms"),
])
def test_call_and_agent_refuse_bad_combinations(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_nat_matrix_json(capsys):
    rc, out, err = run(capsys, "nat-matrix", "--transports", "sip,sip-comedia", "--presets", "open,symmetric",
                       "--seconds", "0.5", "--json")
    assert rc == 0, err
    cells = json.loads(out)
    assert len(cells) == 2 * 2 * 2
    for c in cells:
        assert {"caller_nat", "agent_nat", "method", "caller_to_agent", "agent_to_caller", "path", "setup_ms"} <= set(c)
    by = {(c["method"], c["caller_nat"], c["agent_nat"]): (c["caller_to_agent"], c["agent_to_caller"]) for c in cells}
    # plain SIP behind a symmetric NAT: the agent sends to the private SDP address -> one-way
    assert by[("sip", "symmetric", "open")] == (True, False)
    # symmetric RTP at a public agent fixes it
    assert by[("sip-comedia", "symmetric", "open")] == (True, True)


def test_call_on_the_vnet_in_virtual_time(capsys):
    argv = ["call", "--net", "vnet", "--caller-nat", "symmetric", "--method", "sip", "--virtual-time",
            "--duration", "2", "--speech", "harvard", "--json"]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    r = json.loads(out)
    # plain SIP from behind a symmetric NAT: the agent sends to the private SDP address
    assert r["caller_to_agent"] is True and r["agent_to_caller"] is False
    rc2, out2, _ = run(capsys, *argv)
    assert out2 == out  # virtual time: the same JSON, bit for bit
