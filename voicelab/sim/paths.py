"""The phone side of a phone call, hop by hop: PSTN leg presets simulated through the lab.

A call from a phone to a voice agent crosses hops the lab cannot run (a handset or a
mobile terminal, the radio leg, the mobile/fixed core, long-distance transmission,
exchanges, the carrier's media gateway towards the SIP trunk). Each hop here is either

- **modelled**: a fixed one-way delay with the source it comes from (ITU-T G.114 planning
  values, 3GPP TS 26.131 for the radio leg), or
- **measured**: a codec leg the lab runs for real in ``sim`` mode (encode, packetize,
  channel, jitter buffer, decode/PLC), whose delay (frame + look-ahead + buffer) the lab
  measures.

:func:`simulate_path` runs the codec legs in tandem (the decoded audio of one leg is the
input of the next: AMR-NB -> G.711 transcoding at the carrier edge really happens),
puts the modelled delays on the channel of the leg that follows them, and measures the
end-to-end mouth-to-ear delay by cross-correlation of what the phone sent with what the
trunk delivers. The result's hop table says which figure is measured and which modelled;
the hops add up to the measured total (checked within 2 ms in the tests).

Sources (see ``docs/paths.md``):

- ITU-T G.114 (05/2003), Table A.1 planning values: optical fibre 5 us/km (``4-5 us/km``
  for terrestrial coax/radio-relay); digital transit exchange (digital-digital) 0.45 ms;
  digital local exchange (analogue-digital) 1.5 ms. One-way 150 ms is transparent for
  most uses; 400 ms is the planning limit.
- 3GPP TS 26.131 (UE delay definition, note in 5.12.0.1): half of the UMTS air interface
  transmission time is about 10 ms in each direction, 20 ms frame, 5 ms AMR look-ahead
  (the lab measures the codec part itself; the radio part is modelled as 2 x 10 ms).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import audio
from ..errors import ParameterError
from ..net import ChannelConfig

__all__ = ["Hop", "HOPS", "PSTN_PRESETS", "TANDEM_CHAINS", "WER_CHAINS", "simulate_path", "path_hops", "PathResult", "tandem", "tandem_wer",
           "tandem_table", "preset_table"]

_FIBRE_US_PER_KM = 5.0
_G114 = "ITU-T G.114 (05/2003) Table A.1 planning value"


@dataclass(frozen=True)
class Hop:
    """One hop of a path.

    Parameters
    ----------
    name : str
        What it stands for ("mobile terminal, AMR-NB 12.2", "propagation 500 km"...).
    kind : str
        ``terminal``, ``radio``, ``core``, ``propagation``, ``switching``, ``gateway``.
    delay_ms : float
        Modelled one-way delay of the hop itself in ms (0 for a pure codec leg).
    codec : str, optional
        A codec leg the lab runs (registry name); None for a pure delay.
    codec_params : Mapping
        Its parameters (e.g. AMR-NB ``bitrate``).
    jitter_buffer : str
        The leg's receive buffer (``fixed:MS``); "fixed:0" for a circuit-switched leg.
    source : str
        Where the modelled figure comes from.
    """

    name: str
    kind: str
    delay_ms: float = 0.0
    codec: str | None = None
    codec_params: Mapping[str, Any] = field(default_factory=dict)
    jitter_buffer: str = "fixed:0"
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("terminal", "radio", "core", "propagation", "switching", "gateway"):
            raise ParameterError(f"hop {self.name!r}: unknown kind {self.kind!r}")
        if not (isinstance(self.delay_ms, (int, float)) and 0 <= float(self.delay_ms) <= 1000):
            raise ParameterError(f"hop {self.name!r}: delay_ms must be 0..1000 ms, got {self.delay_ms!r}")


def propagation(km: float) -> Hop:
    """Transmission over ``km`` of optical fibre (G.114: 5 us/km)."""
    if not 0 <= float(km) <= 40000:
        raise ParameterError(f"distance {km!r} km is outside 0..40000")
    return Hop(f"propagation {km:g} km (fibre)", "propagation", float(km) * _FIBRE_US_PER_KM / 1000.0,
               source=f"{_G114}: optical fibre 5 us/km")


def switching(transit: int, *, local: int = 0) -> Hop:
    """``transit`` digital transit exchanges (0.45 ms each) and ``local`` local exchanges (1.5 ms)."""
    return Hop(f"switching: {transit} transit + {local} local exchange(s)", "switching",
               0.45 * int(transit) + 1.5 * int(local),
               source=f"{_G114}: digital transit exchange 0.45 ms, local exchange 1.5 ms")


#: Named hops (used by the presets; a path can also be given as a list of Hop objects).
HOPS: dict[str, Hop] = {
    "landline-handset": Hop("landline handset + analogue line", "terminal", 0.0,
                            source="an analogue line adds no delay beyond the local exchange (counted in switching)"),
    "mobile-terminal-amr": Hop("mobile terminal, AMR-NB 12.2 kbit/s", "terminal", codec="amr-nb",
                               codec_params={"bitrate": 12200}, jitter_buffer="fixed:0",
                               source="measured: the lab's AMR-NB (frame + look-ahead); circuit-switched, no jitter buffer"),
    "radio-umts": Hop("radio leg (UMTS air interface)", "radio", 20.0,
                      source="3GPP TS 26.131 5.12.0.1 note: 2 x 10 ms half air-interface transmission time"),
    "core-transcode-g711": Hop("mobile core: AMR-NB -> G.711 transcoding at the carrier edge", "core", codec="pcmu",
                               jitter_buffer="fixed:0",
                               source="measured: the lab's G.711 leg after the AMR decoder (tandem coding)"),
    "international-g729": Hop("international leg, G.729", "core", codec="g729", jitter_buffer="fixed:40",
                              source="measured: the lab's G.729 leg with a 40 ms buffer (REFERENCE-FACTS nominal VoIP buffer)"),
    "carrier-media-gateway": Hop("carrier media gateway -> SIP trunk (G.711, 20 ms, 40 ms buffer)", "gateway",
                                 codec="pcmu", jitter_buffer="fixed:40",
                                 source="measured: the lab's G.711 leg; 40 ms nominal buffer (REFERENCE-FACTS)"),
}

#: Preset paths: the phone side of a phone call, ending at the SIP trunk.
PSTN_PRESETS: dict[str, tuple[Any, ...]] = {
    "pstn-local-landline": ("landline-handset", switching(1, local=2), ("propagation", 50), "carrier-media-gateway"),
    "pstn-national-mobile": ("mobile-terminal-amr", "radio-umts", "core-transcode-g711", switching(3),
                             ("propagation", 800), "carrier-media-gateway"),
    "pstn-international": ("mobile-terminal-amr", "radio-umts", "core-transcode-g711", switching(4),
                           ("propagation", 9000), "international-g729", switching(2),
                           "carrier-media-gateway"),
}


def path_hops(path: str | Sequence[Any], *, open_end: bool = False) -> list[Hop]:
    """The hops of a preset name or a list of hop names / Hop objects / ("propagation", km).

    Raises
    ------
    ParameterError
        Unknown preset or hop (the message lists the known ones), or a path with no codec leg.
    """
    if isinstance(path, str):
        if path not in PSTN_PRESETS:
            raise ParameterError(f"unknown path preset {path!r}; known: {', '.join(sorted(PSTN_PRESETS))}")
        path = PSTN_PRESETS[path]
    hops: list[Hop] = []
    for h in path:
        if isinstance(h, Hop):
            hops.append(h)
        elif isinstance(h, str):
            if h not in HOPS:
                raise ParameterError(f"unknown hop {h!r}; known: {', '.join(sorted(HOPS))}")
            hops.append(HOPS[h])
        elif isinstance(h, (tuple, list)) and len(h) == 2 and h[0] == "propagation":
            hops.append(propagation(h[1]))
        else:
            raise ParameterError(f"a hop is a name, a Hop or ('propagation', km), got {h!r}")
    if open_end:
        return hops
    if not any(h.codec for h in hops):
        raise ParameterError("a path needs at least one codec leg (e.g. 'carrier-media-gateway')")
    if hops[-1].codec is None:
        raise ParameterError("a path must end with a codec leg (the gateway towards the trunk)")
    return hops


@dataclass
class PathResult:
    """What :func:`simulate_path` measured.

    Attributes
    ----------
    hops : pandas.DataFrame
        One row per hop: ``hop``, ``kind``, ``delay_ms``, ``how`` (``measured`` or
        ``modelled``), ``source``.
    mouth_to_ear_ms : float
        Measured end to end (cross-correlation of the phone's speech with the trunk's audio).
    parts_ms : float
        Sum of the hop table.
    pesq_nb : float or None
        End-to-end PESQ (narrowband) of the trunk's audio against the phone's speech.
    legs : list
        The per-leg :class:`voicelab.sim.Result` objects.
    reference : numpy.ndarray or None
        The phone's speech (the mouth) at ``reference_rate`` Hz: the first codec leg's input
        (its rate), or the speech itself on a path with no codec leg. Sample 0 is the time
        origin of the path's output (``out_wav`` includes the delay).
    reference_rate : int
        Hz.
    """

    hops: pd.DataFrame
    mouth_to_ear_ms: float
    parts_ms: float
    pesq_nb: float | None
    legs: list = dataclasses.field(repr=False, default_factory=list)
    speech: str = ""
    synthetic_speech: bool = False
    reference: np.ndarray | None = dataclasses.field(repr=False, default=None)
    reference_rate: int = 0

    @property
    def residual_ms(self) -> float:
        """Measured total minus the sum of the parts."""
        return self.mouth_to_ear_ms - self.parts_ms

    def to_dict(self) -> dict[str, Any]:
        return {"mouth_to_ear_ms": self.mouth_to_ear_ms, "parts_ms": self.parts_ms, "residual_ms": self.residual_ms,
                "pesq_nb": self.pesq_nb, "speech": self.speech, "synthetic_speech": self.synthetic_speech,
                "hops": self.hops.to_dict(orient="records")}


def simulate_path(path: str | Sequence[Any], *, speech: str = "default", loss_rate: float = 0.0, seed: int = 0,
                  max_speech_s: float = 8.0, quality: bool = True, open_end: bool = False,
                  out_wav: str | None = None, drop_gateway: bool = False, input: str | None = None) -> PathResult:
    """Send speech from a phone through a PSTN path to the SIP trunk, in ``sim`` mode.

    Parameters
    ----------
    path : str or sequence
        A preset of :data:`PSTN_PRESETS` or a list of hops (see :func:`path_hops`).
    speech : str
        Named speech as in :class:`voicelab.sim.Scenario`.
    loss_rate : float
        Random packet loss on the final (IP) leg towards the trunk.
    seed : int
        Seeds every leg (derived per leg).
    max_speech_s : float
        Speech length in seconds.
    quality : bool
        Compute end-to-end PESQ.
    open_end : bool
        The path may end with (or consist only of) modelled hops: their delay is applied as
        a pure shift of the audio (a live leg continues the path, see :mod:`voicelab.hybrid`).
    out_wav : str, optional
        Write the audio leaving the path (delay included) to this WAV file.
    drop_gateway : bool
        Leave out trailing ``gateway`` hops (a live trunk leg stands for them).
    input : str, optional
        A WAV file the phone sends instead of ``speech`` (e.g. an utterance with a transcript).

    Returns
    -------
    PathResult
    """
    from .engine import simulate_call
    from .scenario import Scenario

    hops = path_hops(path, open_end=open_end)
    while drop_gateway and hops and hops[-1].kind == "gateway":
        hops = hops[:-1]
    rows: list[dict[str, Any]] = []
    legs = []
    pending_ms = 0.0
    seeds = np.random.SeedSequence(int(seed)).spawn(len(hops))
    with tempfile.TemporaryDirectory(prefix="voicelab-path-") as tmp:
        current: str | None = None if input is None else str(input)  # WAV entering the next leg
        reference = None
        rate = None
        first_speech = None
        for i, hop in enumerate(hops):
            if hop.codec is None:
                pending_ms += float(hop.delay_ms)
                rows.append({"hop": hop.name, "kind": hop.kind, "delay_ms": float(hop.delay_ms), "how": "modelled",
                             "source": hop.source})
                continue
            last = i == len(hops) - 1
            ch = ChannelConfig(delay_ms=pending_ms + float(hop.delay_ms), loss_rate=loss_rate if last else 0.0)
            scn = Scenario(codec=hop.codec, codec_params=dict(hop.codec_params), channel=ch,
                           jitter_buffer=hop.jitter_buffer, speech=speech, input=current,
                           max_speech_s=max_speech_s + 2.0, level_db=-26.0,
                           seed=int(seeds[i].generate_state(1)[0] & 0x7FFFFFFF))
            leg = simulate_call(scn, quality=False)
            legs.append(leg)
            ref, _, r = leg.audio_pair()
            deg = leg.played
            if reference is None:
                reference, rate, first_speech = np.asarray(ref, dtype=np.float64), r, leg.metrics
            if deg.size and r != rate:
                deg = audio.resample(deg, r, rate)
            own = float(leg.metrics["mouth_to_ear_true_ms"]) - ch.delay_ms
            rows.append({"hop": hop.name, "kind": hop.kind, "delay_ms": own, "how": "measured (sim)",
                         "source": hop.source})
            pending_ms = 0.0
            current = os.path.join(tmp, f"leg{i}.wav")
            audio.write_wav(current, np.asarray(deg, dtype=np.float64), int(rate))
        if reference is None:  # no codec leg: the phone's speech itself enters the live leg
            from .engine import load_speech

            sp = load_speech(Scenario(speech=speech, input=input, max_speech_s=max_speech_s))
            reference, rate = np.asarray(sp.samples, dtype=np.float64), sp.sample_rate
            first_speech = {"speech": sp.name, "synthetic_speech": sp.synthetic}
            final = reference
        else:
            final, _ = audio.read_wav(current)
        if pending_ms:  # trailing modelled hops: a pure delay
            final = np.concatenate([np.zeros(int(round(pending_ms * rate / 1000.0))), final])
        if out_wav:
            audio.write_wav(out_wav, np.asarray(final, dtype=np.float64), int(rate))
    est = audio.estimate_delay(reference, final[: len(reference) + int(rate)], int(rate), max_delay_ms=1500.0)
    table = pd.DataFrame(rows, columns=["hop", "kind", "delay_ms", "how", "source"])
    pesq_nb = None
    if quality:
        from .. import metrics

        aligned = audio.compensate(final, est.delay_samples, len(reference))
        ref8 = audio.resample(reference, int(rate), 8000) if rate != 8000 else reference
        deg8 = audio.resample(aligned, int(rate), 8000) if rate != 8000 else aligned
        try:
            pesq_nb = float(metrics.pesq(ref8, deg8[: len(ref8)], 8000, mode="nb"))
        except Exception as exc:  # noqa: BLE001 - the scorer's failure must not lose the delay table
            from ..errors import VoicelabError

            if not isinstance(exc, VoicelabError):
                raise
            pesq_nb = None
    return PathResult(table, float(est.delay_ms), float(table["delay_ms"].sum()), pesq_nb, legs,
                      speech=str(first_speech.get("speech", "")), synthetic_speech=bool(first_speech.get("synthetic_speech")),
                      reference=np.asarray(reference, dtype=np.float64), reference_rate=int(rate))


#: Codec chains speech meets on real paths (each arrow a decode + re-encode).
TANDEM_CHAINS: dict[str, tuple[str, ...]] = {
    "G.711": ("pcmu",),
    "Opus": ("opus",),
    "AMR-NB -> G.711": ("amr-nb", "pcmu"),
    "Opus -> G.711 (gateway)": ("opus", "pcmu"),
    "Opus -> G.711 -> Opus (gateway both ways)": ("opus", "pcmu", "opus"),
    "AMR-NB -> G.711 -> Opus (phone to browser)": ("amr-nb", "pcmu", "opus"),
    "AMR-NB -> G.711 -> G.729 -> G.711": ("amr-nb", "pcmu", "g729", "pcmu"),
}


def tandem(chain: str | Sequence[str], *, speech: str = "default", seed: int = 0, max_speech_s: float = 8.0,
           input: str | None = None, out_wav: str | None = None, quality: bool = True) -> PathResult:
    """Speech through a chain of codecs in tandem (clean network, circuit-switched legs: no buffers).

    Parameters
    ----------
    chain : str or sequence of str
        A name of :data:`TANDEM_CHAINS` or codec registry names in order.

    input, out_wav, quality : as for :func:`simulate_path`.

    Returns
    -------
    PathResult
        ``pesq_nb`` end to end, and the delay each coding adds (frame + look-ahead).
    """
    if isinstance(chain, str):
        if chain not in TANDEM_CHAINS:
            raise ParameterError(f"unknown tandem chain {chain!r}; known: {', '.join(TANDEM_CHAINS)}")
        chain = TANDEM_CHAINS[chain]
    if not chain:
        raise ParameterError("a tandem chain needs at least one codec")
    hops = [Hop(f"{c} coding", "core", codec=c, jitter_buffer="fixed:0", source="measured: the lab's codec")
            for c in chain]
    return simulate_path(hops, speech=speech, seed=seed, max_speech_s=max_speech_s, input=input, out_wav=out_wav,
                         quality=quality)


def _speech_items(n: int | None) -> list[Any]:
    from ..audio import corpus_items

    by_talker: dict[str, list] = {}
    for it in corpus_items(sample_rate=16000):
        by_talker.setdefault(it.talker, []).append(it)
    items, queues = [], [list(v) for v in by_talker.values()]
    while any(queues):  # talkers alternate, so a few items already cover several voices
        for q in queues:
            if q:
                items.append(q.pop(0))
    if n is not None:
        if not isinstance(n, int) or n < 1:
            raise ParameterError(f"n_items must be an integer >= 1, got {n!r}")
        items = items[:n]
    return items


def tandem_table(chains: Sequence[str] | None = None, *, n_items: int | None = None, seed: int = 0,
                 max_speech_s: float = 8.0) -> pd.DataFrame:
    """Every tandem chain on every corpus item (talkers and utterances vary): one row per (chain, item).

    Parameters
    ----------
    chains : sequence of str, optional
        Names of :data:`TANDEM_CHAINS` (default: all).
    n_items : int, optional
        The first ``n_items`` corpus items (default: all).

    Returns
    -------
    pandas.DataFrame
        ``chain``, ``item``, ``talker``, ``natural``, ``pesq_nb``, ``delay_ms`` (frames +
        look-aheads of the codings), ``seed``.
    """
    rows = []
    for k, it in enumerate(_speech_items(n_items)):
        for name in (chains or list(TANDEM_CHAINS)):
            r = tandem(name, speech=it.speech, seed=seed + k, max_speech_s=max_speech_s)
            rows.append({"chain": name, "item": it.id, "talker": it.talker, "natural": bool(it.natural),
                         "pesq_nb": r.pesq_nb, "delay_ms": r.mouth_to_ear_ms, "seed": seed + k})
    return pd.DataFrame(rows)


def preset_table(presets: Sequence[str] | None = None, *, n_items: int | None = None, seed: int = 0,
                 max_speech_s: float = 8.0) -> pd.DataFrame:
    """Every PSTN preset on every corpus item: one row per (preset, item) with delay, parts and PESQ."""
    rows = []
    for k, it in enumerate(_speech_items(n_items)):
        for name in (presets or list(PSTN_PRESETS)):
            r = simulate_path(name, speech=it.speech, seed=seed + k, max_speech_s=max_speech_s)
            rows.append({"preset": name, "item": it.id, "talker": it.talker, "pesq_nb": r.pesq_nb,
                         "mouth_to_ear_ms": r.mouth_to_ear_ms, "parts_ms": r.parts_ms, "residual_ms": r.residual_ms,
                         "seed": seed + k})
    return pd.DataFrame(rows)


#: The tandem chains whose cost in the agent's word error rate :func:`tandem_wer` measures by default.
WER_CHAINS = ("G.711", "Opus", "AMR-NB -> G.711", "Opus -> G.711 -> Opus (gateway both ways)",
              "AMR-NB -> G.711 -> G.729 -> G.711")


def tandem_wer(chains: Sequence[str] | None = None, *, n_utterances: int = 6, repeats: int = 1, seed: int = 0,
               reference: bool = True, stop_ms: float = 300.0) -> pd.DataFrame:
    """The agent's word error rate after each tandem chain: one row per (chain, utterance, repeat).

    Each utterance with a transcript (:func:`voicelab.turns.load_utterances`: the CMU ARCTIC
    items of the corpus, two talkers) goes through the chain's codecs in tandem
    (:func:`tandem`, clean, no buffers) and the decoded audio is heard by the lab's pipeline
    agent offline (:func:`voicelab.sim.turns.hear_offline`: WebRTC VAD, endpointer,
    PocketSphinx, a fresh recogniser per utterance, as in ``sim`` turns) at the last leg's
    sample rate, as on a call (8 kHz after G.711: the pipeline's narrowband folding and
    adaptation apply); its recognition is
    scored against the transcript (:func:`voicelab.pipeline.wer.word_errors`).

    Parameters
    ----------
    chains : sequence of str, optional
        Names of :data:`TANDEM_CHAINS` (default :data:`WER_CHAINS`).
    n_utterances : int
        How many utterances (cycling through the six ARCTIC items).
    repeats : int
        Runs per (chain, utterance) with different seeds (codec legs are deterministic on a
        clean channel, so repeats only matter for seeded parts: leave it at 1 unless you
        change that).
    reference : bool
        Also score the uncoded utterance at 16 kHz and band-limited to 8 kHz (rows
        ``no coding (16 kHz)`` and ``no coding (8 kHz band)``): the recogniser's own floor.
    stop_ms : float
        The endpointer's silence (as the agent).

    Returns
    -------
    pandas.DataFrame
        ``chain``, ``utterance``, ``talker``, ``repeat``, ``wer``, ``word_errors``,
        ``words``, ``recognised``, ``pesq_nb`` (None for the references), ``delay_ms``,
        ``heard_hz`` (the sample rate the agent heard).
    """
    from .. import codecs
    from ..pipeline.core import PipelineConfig
    from ..pipeline.wer import word_errors
    from ..turns import load_utterances
    from .turns import hear_offline

    names = list(chains) if chains is not None else list(WER_CHAINS)
    for c in names:
        if c not in TANDEM_CHAINS:
            raise ParameterError(f"unknown tandem chain {c!r}; known: {', '.join(TANDEM_CHAINS)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ParameterError(f"repeats must be an integer >= 1, got {repeats!r}")
    utts = load_utterances(n_utterances)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voicelab-tandem-wer-") as tmp:
        for i, u in enumerate(utts):
            pad = np.zeros(8000)
            x = np.concatenate([pad, u.samples, pad])
            src = os.path.join(tmp, f"u{i}.wav")
            audio.write_wav(src, x, 16000)
            talker = u.name.split("_")[2] if u.name.count("_") >= 3 else u.name
            for rep in range(repeats):
                s = seed + 1000 * rep + i
                runs: list[tuple[str, np.ndarray, int, float | None, float | None]] = []
                if reference:
                    runs.append(("no coding (16 kHz)", x, 16000, None, 0.0))
                    runs.append(("no coding (8 kHz band)", audio.resample(x, 16000, 8000), 8000, None, 0.0))
                for c in names:
                    out = os.path.join(tmp, f"u{i}-{len(runs)}-{rep}.wav")
                    r = tandem(c, input=src, seed=s, max_speech_s=60.0, out_wav=out)
                    y, rate = audio.read_wav(out)
                    y = np.asarray(y, dtype=np.float64)
                    # the agent hears the last leg at that codec's rate, as on a call: a G.711
                    # leg gives it 8 kHz, so its narrowband handling (folding, adaptation) applies
                    last = int(codecs.get(TANDEM_CHAINS[c][-1]).sample_rate)
                    if last < rate:
                        y, rate = audio.resample(y, int(rate), last), last
                    runs.append((c, y, int(rate), r.pesq_nb, r.mouth_to_ear_ms))
                for c, y, rate, pesq, delay in runs:
                    p = hear_offline(y, rate, config=PipelineConfig(stop_ms=stop_ms, seed=s), seed=s)
                    text = " ".join(t.text or "" for t in p.turns)
                    e, n = word_errors(u.transcript, text)
                    rows.append({"chain": c, "utterance": u.name, "talker": talker, "repeat": rep,
                                 "wer": e / n if n else float("nan"), "word_errors": e, "words": n,
                                 "recognised": text, "pesq_nb": pesq, "delay_ms": delay, "synthetic": u.synthetic,
                                 "heard_hz": rate})
    return pd.DataFrame(rows)
