"""The voice agent's turn, measured where the caller is.

A conversation driver on the caller's side plays utterances with known transcripts,
waits for each reply (or barges in), and afterwards every turn is taken apart on the
shared loop clock (caller and agent run in one process, so each hop is measured, not
estimated)::

    end of the caller's speech (ground truth from the source signal, T0)
      -> caller packetization + codec look-ahead   (frame with T0 sent)
      -> network up                                 (arrives at the agent)
      -> agent jitter buffer                        (played out to the pipeline)
      -> endpointing wait                           (VAD: stop_ms of silence seen)
      -> recognition final                          (PocketSphinx end of utterance)
      -> response first token                       (modelled or real LLM)
      -> synthesis first audio                      (first clause from eSpeak NG)
      -> agent send queue                           (next 20 ms send tick)
      -> network down                               (first reply packet arrives)
      -> caller jitter buffer                       (played at the caller's ear)
      (+ downlink codec look-ahead)

The parts telescope; ``turn.total_ms`` is measured independently, from the first
audible sample of the reply in the caller's played-out audio, and ``residual_ms`` says
by how much the parts miss it (a sub-frame onset offset; more means something is not
understood). Beside it the agent's own figure (``server_ms``: end of utterance detected
-> first reply frame sent, what framework latency observers report).

What the agent understood: ``wer`` of each utterance's recognition against its
transcript (:func:`voicelab.pipeline.wer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .errors import ParameterError

__all__ = ["Utterance", "load_utterances", "ConversationDriver", "analyse_turns", "summarise_turns", "barge_in_bounds",
           "pipeline_call", "ARCTIC_TRANSCRIPTS", "BREAKDOWN", "WEBRTC_PARTS"]  # fmt: skip

#: CMU ARCTIC prompts (arctic.data, the corpus' own prompt list) for the items in the
#: lab's natural-speech folder.
ARCTIC_TRANSCRIPTS = {
    "a0001": "Author of the danger trail, Philip Steels, etc.",
    "a0002": "Not at this particular case, Tom, apologized Whittemore.",
    "a0003": "For the twentieth time that evening the two men shook hands.",
    "a0004": "Lord, but I'm glad to see you again, Phil.",
    "a0005": "Will we ever forget it.",
    "a0006": "God bless 'em, I hope I'll go on seeing them forever.",
}

#: The breakdown's parts, in order (ms each in the results, ``turn.<part>_ms``).
BREAKDOWN = ("caller_packetization", "network_up", "agent_jitter_buffer", "endpointing_wait", "asr_final",
             "llm_first_token", "tts_first_audio", "agent_send_queue", "network_down", "caller_jitter_buffer",
             "codec_lookahead_down")  # fmt: skip
#: WebRTC's two parts more (aiortc's sender on each side: frame handed over -> on the wire)
WEBRTC_PARTS = ("caller_sender", "agent_sender")

SPEECH_LEVEL = 0.01  # |x| above this (full scale 1) is speech/sound, for ground truth and the ear
#: the agent's VAD may call speech this long before the ground-truth onset (a breath or a
#: soft onset under SPEECH_LEVEL; it hears the frames as they arrive): an agent turn that
#: starts this early still belongs to the caller's utterance
EARLY_VAD_S = 0.3
EAR_LEVEL = 0.005


@dataclass
class Utterance:
    """One caller utterance: float audio at 16 kHz, its transcript, where speech is."""

    name: str
    samples: np.ndarray
    transcript: str
    synthetic: bool = False

    @property
    def speech_bounds(self) -> tuple[int, int]:
        """(first, last+1) sample index above :data:`SPEECH_LEVEL` at 16 kHz."""
        idx = np.flatnonzero(np.abs(self.samples) >= SPEECH_LEVEL)
        if not len(idx):
            return 0, len(self.samples)
        return int(idx[0]), int(idx[-1]) + 1


def load_utterances(n: int = 5) -> list[Utterance]:
    """``n`` utterances with transcripts, cycling through what is available.

    Natural speech first: CMU ARCTIC items (``cmu_arctic_*_a000N.wav``) in ``VOICELAB_DATA``
    or the package's ``voicelab/data/speech`` folder; otherwise eSpeak NG sentences of
    Harvard list 1 (synthetic, marked so).
    """
    from .audio.espeak import HARVARD_LIST_1, synthesize

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
        raise ParameterError(f"turns must be an int in 1..1000, got {n!r}")
    items: list[Utterance] = []
    folders = [os.environ.get("VOICELAB_DATA", "").strip(), str(Path(__file__).parent / "data" / "speech")]
    for folder in folders:
        if not folder or not Path(folder).is_dir():
            continue
        for p in sorted(Path(folder).glob("cmu_arctic_*.wav")):
            key = p.stem.split("_")[-1]
            if key in ARCTIC_TRANSCRIPTS:
                x, rate = audio.read_wav(p)
                items.append(Utterance(p.stem, audio.resample(np.asarray(x, dtype=np.float64), rate, 16000),
                                       ARCTIC_TRANSCRIPTS[key]))  # fmt: skip
        if items:
            break
    if not items:
        for i, s in enumerate(HARVARD_LIST_1):
            items.append(Utterance(f"harvard1_{i + 1:02d}", synthesize(s, sample_rate=16000), s, synthetic=True))
    return [items[i % len(items)] for i in range(n)]


@dataclass
class CallerTurn:
    """What the driver did and heard in one turn (loop times, s)."""

    index: int
    utterance: Utterance
    first_frame: int  # index of the first send tick of the utterance
    capture_start: float  # loop time of the utterance's first sample
    speech_from: float
    speech_end: float  # T0: last speech sample of the source
    last_frame: int  # send tick that carried T0
    barge_in: bool = False
    reply_onset: float | None = None  # first audible reply sample at the ear
    reply_seq: int | None = None
    reply_heard_end: float | None = None
    outcome: str = "ok"


class ConversationDriver:
    """The caller: a frame source for its send clock and a listener on its playout.

    Parameters
    ----------
    utterances : list of Utterance
    sample_rate : int
        The codec's rate (frames in and out).
    frame_ms : int
    gap_s : float
        Pause after a reply ends before the next utterance.
    reply_timeout_s : float
        No reply heard this long after the end of speech: the turn is ``no_reply``.
    reply_end_silence_s : float
        Silence at the ear that ends a reply.
    barge_in_after_s : float, optional
        Talk over each reply this long after it starts (the next utterance is the
        barge-in; the last turn's reply is heard out).
    hangup_after_s : float, optional
        Hang up this long into the last reply (``done`` resolves then).
    lead_s : float
        Silence before the first utterance.
    """

    def __init__(self, utterances: list[Utterance], *, sample_rate: int, frame_ms: int = 20, gap_s: float = 0.3,
                 reply_timeout_s: float = 8.0, reply_end_silence_s: float = 0.9, barge_in_after_s: float | None = None,
                 hangup_after_s: float | None = None, lead_s: float = 0.4) -> None:  # fmt: skip
        self.utterances = list(utterances)
        self.rate, self.frame_ms = int(sample_rate), int(frame_ms)
        self.F = self.rate * self.frame_ms // 1000
        self.frame_s = self.frame_ms / 1000.0
        self._audio = [audio.resample(u.samples, 16000, self.rate) for u in self.utterances]
        self.gap_s, self.reply_timeout_s, self.reply_end_silence_s = gap_s, reply_timeout_s, reply_end_silence_s
        self.barge_in_after_s, self.hangup_after_s, self.lead_s = barge_in_after_s, hangup_after_s, lead_s
        self.turns: list[CallerTurn] = []
        self.ticks = 0
        self._state = "lead"
        self._cur: np.ndarray | None = None
        self._pos = 0
        self._next_at: float | None = None
        self._last_loud: float | None = None
        self._quiet = False
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    # send clock --------------------------------------------------------------
    def source(self, now: float) -> np.ndarray | None:
        tick = self.ticks
        self.ticks += 1
        if self._next_at is None:
            self._next_at = now + self.lead_s
        if self._state in ("lead", "gap") and now >= self._next_at - 1e-9 or self._state == "barge":
            self._start_utterance(now, tick, barge=self._state == "barge")
        if self._state == "waiting" and self.turns and now - self.turns[-1].speech_end > self.reply_timeout_s:
            self.turns[-1].outcome = "no_reply"
            self._after_reply(now)
        if self._state != "talking":
            return None
        F = self.F
        frame = self._cur[self._pos : self._pos + F]  # type: ignore[index]
        self._pos += F
        t = self.turns[-1]
        if t.speech_end <= now + 1e-9 and t.last_frame < 0:
            t.last_frame = tick
        if self._pos >= len(self._cur):  # type: ignore[arg-type]
            self._state = "waiting"
        out = np.zeros(F, dtype=np.int16)
        out[: len(frame)] = audio.to_int16(frame)
        return out

    def _start_utterance(self, now: float, tick: int, *, barge: bool) -> None:
        i = len(self.turns)
        if i >= len(self.utterances):
            self._state = "finished"
            return
        u = self.utterances[i]
        x = self._audio[i]
        cap0 = now - self.frame_s  # this frame was captured during the last frame time
        a, b = u.speech_bounds
        self.turns.append(CallerTurn(i, u, tick, cap0, cap0 + a / 16000.0, cap0 + b / 16000.0, -1, barge_in=barge))
        self._cur, self._pos, self._state = x, 0, "talking"
        self._last_loud, self._quiet = None, False

    def _after_reply(self, now: float) -> None:
        if len(self.turns) >= len(self.utterances):
            self._state = "finished"
            if not self.done.done():
                self.done.set_result(now)
        else:
            self._state, self._next_at = "gap", now + self.gap_s

    # ear ----------------------------------------------------------------------
    def on_played(self, frame: np.ndarray, when: float, seq: int | None) -> None:
        if not self.turns:
            return
        t = self.turns[-1]
        x = audio.to_float(np.asarray(frame, dtype=np.int16))
        loud = np.flatnonzero(np.abs(x) >= EAR_LEVEL)
        if self._state == "waiting" and not len(loud) and when >= t.speech_end:
            self._quiet = True  # a reply counts from its onset after a quiet frame
        if self._state in ("waiting", "hearing", "talking") and len(loud) and when >= t.speech_end:
            if t.reply_onset is None and self._state == "waiting" and self._quiet:
                t.reply_onset, t.reply_seq = when + loud[0] / self.rate, seq
                self._state = "hearing"
            if t.reply_onset is not None:
                self._last_loud = when + (loud[-1] + 1) / self.rate
        if self._state == "hearing":
            last = self._last_loud or t.reply_onset
            if self.hangup_after_s is not None and len(self.turns) == len(self.utterances) and \
                    when - t.reply_onset >= self.hangup_after_s:  # type: ignore[operator]
                t.outcome = "hung_up_mid_reply"
                self._state = "finished"
                if not self.done.done():
                    self.done.set_result(when)
            elif self.barge_in_after_s is not None and len(self.turns) < len(self.utterances) and \
                    when - t.reply_onset >= self.barge_in_after_s:  # type: ignore[operator]
                t.reply_heard_end = None
                self._state = "barge"
            elif when + self.frame_s - last >= self.reply_end_silence_s:  # type: ignore[operator]
                t.reply_heard_end = last
                self._after_reply(when)
        if self._state == "waiting" and when - t.speech_end > self.reply_timeout_s:
            t.outcome = "no_reply"
            self._after_reply(when)


# ------------------------------------------------------------------------------ analysis
def _seq(first: int | None, tick: int) -> int | None:
    return None if first is None or tick < 0 else (first + tick) & 0xFFFF


def _at_or_after(d: dict, seq: int, n: int = 50) -> tuple[float, int]:
    """``d[seq]``, or the first of the next ``n`` sequence numbers present (KeyError: none)."""
    for i in range(n):
        k = (seq + i) & 0xFFFF
        if k in d:
            return d[k], k
    raise KeyError(seq)


def _agent_turn_for(agent_turns: list[dict], reply_start: float | None, t: CallerTurn) -> dict | None:
    if reply_start is not None:
        cands = [a for a in agent_turns if a["reply_start"] is not None and abs(a["reply_start"] - reply_start) < 1e-6]
        if cands:
            return cands[-1]
    cands = [a for a in agent_turns if a["speech_end"] is not None and a["speech_start"] >= t.speech_from - 0.5
             and a["speech_end"] >= t.speech_end - 0.05]  # fmt: skip
    return cands[0] if cands else None


def analyse_turns(driver: ConversationDriver, caller: Any, agent_stream: Any, agent_summary: dict,
                  *, lookahead_up_ms: float = 0.0, lookahead_down_ms: float = 0.0) -> list[dict]:  # fmt: skip
    """Per-turn records: the breakdown, its reconciliation, the agent's figure and WER."""
    from .pipeline.wer import wer, word_errors

    agent_turns = agent_summary.get("turns", [])
    out = []
    for i, t in enumerate(driver.turns):
        nxt = driver.turns[i + 1].speech_from if i + 1 < len(driver.turns) else float("inf")
        heard = [a for a in agent_turns if t.speech_from - EARLY_VAD_S <= a["speech_start"] < min(nxt, t.speech_end + 1.0)]
        text = " ".join(a["text"] or "" for a in heard if a["text"] is not None)
        rec: dict[str, Any] = {"turn": i, "utterance": t.utterance.name, "transcript": t.utterance.transcript,
                               "recognised": text, "agent_turns": len(heard), "barge_in": t.barge_in,
                               "outcome": t.outcome, "synthetic_speech": t.utterance.synthetic}  # fmt: skip
        e, n = word_errors(t.utterance.transcript, text)
        rec.update(wer=wer(t.utterance.transcript, text), word_errors=e, words=n)
        if heard and len(heard) > 1:
            rec["false_cutoffs"] = len(heard) - 1
        seq_k = _seq(caller.first_sequence, t.last_frame)
        seq_r = t.reply_seq
        reply_start = agent_stream.send_times.get(seq_r) if seq_r is not None else None
        a = _agent_turn_for(agent_turns, reply_start, t)
        if a is not None:
            rec["agent_reason"] = a["reason"]
            rec["server_ms"] = a["server_ms"]
            rec["llm_modelled"] = a["llm_modelled"]
            if a.get("llm_error"):
                rec["llm_error"] = a["llm_error"]
        if t.reply_onset is None:
            rec["outcome"] = t.outcome if t.outcome != "ok" else "no_reply"
            rec["reason"] = (a or {}).get("reason") or "no reply heard"
            out.append(rec)
            continue
        total = (t.reply_onset - t.speech_end) * 1000.0
        rec["total_ms"] = total
        try:
            s_up = caller.send_times[seq_k]
            arr_a, ka = _at_or_after(agent_stream.arrivals, seq_k)
            # when the agent's pipeline heard the frame: its arrival tap's release (the lab's
            # fronts), else the playout (an agent that listens after a jitter buffer)
            heard_at = getattr(agent_stream, "tapped_at", None) or agent_stream.played_at
            play_a, kp = _at_or_after(heard_at, seq_k)
            arr_c = caller.arrivals[seq_r]
            play_c = caller.played_at[seq_r]
            if ka != seq_k or kp != seq_k:  # lost or late: the chain follows the next frame that made it
                rec["chain_note"] = f"uplink frame {seq_k} lost or late; followed frame {kp}"
            if a is None or reply_start is None or a["reply_start"] is None:
                raise KeyError("reply")
        except (KeyError, TypeError) as exc:
            rec["reason"] = (f"breakdown unavailable ({exc.args[0] if exc.args else exc!r} missing: a packet of the chain "
                             "was lost or the reply heard is not the start of an agent turn)")
            out.append(rec)
            continue
        la_up, la_down = lookahead_up_ms / 1000.0, lookahead_down_ms / 1000.0
        parts = {
            "caller_packetization": s_up - t.speech_end + la_up,
            "network_up": arr_a - s_up,
            "agent_jitter_buffer": play_a - arr_a,
            "endpointing_wait": a["speech_end"] - play_a - la_up,
            "asr_final": a["asr_final"] - a["speech_end"],
            "llm_first_token": a["llm_first_token"] - a["asr_final"],
            "tts_first_audio": a["tts_first_audio"] - a["llm_first_token"],
            "agent_send_queue": a["reply_start"] - a["tts_first_audio"],
            "network_down": arr_c - reply_start,
            "caller_jitter_buffer": play_c - arr_c,
            "codec_lookahead_down": la_down,
        }
        rec.update({f"{k}_ms": v * 1000.0 for k, v in parts.items()})
        s = sum(parts.values()) * 1000.0 + (reply_start - a["reply_start"]) * 1000.0
        rec["breakdown_sum_ms"] = s
        rec["residual_ms"] = total - s
        rec["reconciled"] = abs(total - s) <= 2.0
        _barge_in(rec, driver, i, caller, agent_turns)
        out.append(rec)
    return out


def _stop_at_ear(caller: Any, t_from: float, t_to: float) -> float | None:
    """End of the last audible sample at the caller's ear in ``[t_from, t_to)``.

    ``t_from`` is the caller's speech onset over the reply, ``t_to`` the end of that
    utterance: the agent cannot answer it before then, so whatever the caller hears in the
    window is the interrupted reply. ``t_from`` itself when nothing is heard.
    """
    x, t0 = caller.received_audio()
    rate = caller.rx.sample_rate if hasattr(caller, "rx") else caller.sample_rate  # a stream, or a WebRTC AudioSink
    i0 = max(0, int(round((t_from - t0) * rate)))
    i1 = max(i0, int(round((t_to - t0) * rate)))
    if i1 > len(x):
        return None
    loud = np.flatnonzero(np.abs(x[i0:i1]) >= EAR_LEVEL)
    return t_from if not len(loud) else t0 + (i0 + int(loud[-1]) + 1) / rate


def _pct(v: list[float]) -> dict[str, float | None]:
    if not v:
        return {"p50": None, "p90": None, "max": None}
    a = np.asarray(v, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "max": float(a.max())}


def summarise_turns(records: list[dict]) -> dict[str, Any]:
    """``turn.*`` statistics over the records: percentiles, breakdown medians, WER, reconciliation."""
    out: dict[str, Any] = {"turn.count": len(records), "turn.answered": sum(1 for r in records if "total_ms" in r)}
    for key in ["total", "server", "residual"] + list(BREAKDOWN) + list(WEBRTC_PARTS) + ["uplink_and_endpointing", "downlink"]:
        vals = [r[f"{key}_ms"] for r in records if r.get(f"{key}_ms") is not None]
        if not vals and key in ("uplink_and_endpointing", "downlink") + WEBRTC_PARTS:
            continue  # WebRTC's own parts
        for k, v in _pct(vals).items():
            out[f"turn.{key}_ms.{k}"] = v
    rec = [r for r in records if "residual_ms" in r]
    out["turn.reconciled"] = bool(rec) and all(r["reconciled"] for r in rec)
    if not rec and any(r.get("reconciled", False) is None for r in records):
        out["turn.reconciled"] = None  # WebRTC: no per-packet times to reconcile with
    out["turn.residual_ms.absmax"] = max((abs(r["residual_ms"]) for r in rec), default=None)
    e, n = sum(r["word_errors"] for r in records), sum(r["words"] for r in records)
    out["turn.wer"] = e / n if n else None
    bs = [r["barge_in_stop_ms"] for r in records if "barge_in_stop_ms" in r]
    for k, v in _pct(bs).items():
        out[f"turn.barge_in_stop_ms.{k}"] = v
    out["turn.outcomes"] = {o: sum(1 for r in records if r["outcome"] == o) for o in sorted({r["outcome"] for r in records})}
    out["turn.llm_modelled"] = all(r.get("llm_modelled", True) for r in records)
    return out


def barge_in_bounds(record: dict, *, min_speech_ms: float = 100.0, frame_ms: float = 20.0,
                    margin_ms: float = 40.0) -> dict[str, float]:  # fmt: skip
    """Upper bounds of a turn's barge-in stop time (ms), from the turn's own breakdown.

    Parameters
    ----------
    record : dict
        A per-turn record of :func:`pipeline_call` (SIP, WebSocket, or WebRTC with its
        per-packet breakdown) that was barged into: its ``network_up_ms``,
        ``agent_jitter_buffer_ms`` (the agent's arrival tap: its reorder wait),
        ``network_down_ms`` and ``caller_jitter_buffer_ms``, and ``barge_in_detect_ms``
        when the agent's decision was matched. Where present, ``agent_sender_ms``
        (WebRTC: aiortc's encoder and SRTP) and ``codec_lookahead_down_ms`` count as
        part of the downlink.
    min_speech_ms, frame_ms, margin_ms : float
        The endpointer's speech-start time, the frame (the VAD's deciding frame, the
        caller's packetization and the agent's send tick), and issue #12's allowance.

    Returns
    -------
    dict
        ``detect_ms``: stop detection, the caller's speech onset -> the agent's barge-in
        decision (measured: ``barge_in_detect_ms``; else its bound, min_speech + deciding
        frame + packetization + uplink network + reorder wait); ``issue_ms``: issue #12's
        bound, detection + one jitter buffer (the caller's) + ``margin_ms``;
        ``nominal_ms``: the same with detection taken as min_speech + one frame (no
        network); ``path_ms``: what the path allows at worst, detection + one reply frame
        already sent (a send tick) + the downlink network + the caller's buffer;
        ``path_extra_ms``: ``path_ms - issue_ms`` (positive: the issue's allowance is too
        small for this path's downlink).
    """
    try:
        up = record["network_up_ms"] + record["agent_jitter_buffer_ms"]
        down_net, down_jb = record["network_down_ms"], record["caller_jitter_buffer_ms"]
        down_net += record.get("agent_sender_ms", 0.0) + record.get("codec_lookahead_down_ms", 0.0)
    except KeyError as exc:
        raise ParameterError(f"barge_in_bounds needs the turn's breakdown ({exc.args[0]} missing)") from None
    detect = record.get("barge_in_detect_ms")
    if detect is None:
        detect = min_speech_ms + frame_ms + frame_ms + up
    issue = detect + down_jb + margin_ms
    path = detect + frame_ms + down_net + down_jb
    return {"detect_ms": detect, "issue_ms": issue, "nominal_ms": min_speech_ms + frame_ms + down_jb + margin_ms,
            "path_ms": path, "path_extra_ms": path - issue}


# ------------------------------------------------------------------------------ calls
async def pipeline_call(
    *,
    transport: str = "sip",
    codec: str = "pcmu",
    turns: int = 5,
    vad: str = "webrtc",
    stop_ms: float = 300.0,
    llm: str | None = None,
    jitter_buffer: str = "fixed:60",
    barge_in_after_s: float | None = None,
    hangup_after_s: float | None = None,
    reply_timeout_s: float = 8.0,
    seed: int = 0,
    pipeline: dict | None = None,
    network: str = "loopback",
    uplink: Any = None,
    downlink: Any = None,
    utterances: list[Utterance] | None = None,
) -> dict[str, Any]:
    """A conversation of ``turns`` utterances with the lab's pipeline agent.

    Parameters
    ----------
    transport : {"sip", "ws", "webrtc"}
        SIP/RTP (the lab's UA and :class:`voicelab.agent.Agent`), WebSocket media streams,
        or WebRTC (the lab's aiortc caller and the agent's WebRTC front; loopback only,
        transport parts lumped: :func:`analyse_webrtc_turns`).
    codec : str
        SIP and WebRTC (WebSocket media streams are 8 kHz mu-law).
    turns : int
    vad, stop_ms, llm : as for ``agent serve --mode pipeline``.
    barge_in_after_s : float, optional
        The caller talks over each reply this long after hearing it start.
    hangup_after_s : float, optional
        The caller hangs up this long into the last reply.
    pipeline : dict, optional
        Further :class:`voicelab.pipeline.PipelineConfig` fields.
    network : {"loopback", "virtual"}
        Real sockets on 127.0.0.1, or the lab's virtual network
        (:mod:`voicelab.vnetcall`'s topology, open NATs; SIP only), which also runs under
        the virtual clock (:func:`voicelab.net.vclock.run_virtual`) faster than real time.
    uplink, downlink : ChannelConfig or dict, optional
        Impairment of the caller's access link (``network="virtual"``).
    utterances : list of Utterance, optional
        What the caller says (default ``load_utterances(turns)``).

    Returns
    -------
    dict
        ``turn.*`` statistics (:func:`summarise_turns`), ``turns`` (one record per turn:
        the breakdown ``*_ms``, ``total_ms``, ``residual_ms``, ``server_ms``, ``wer``,
        ``recognised``), ``agent`` (the agent's per-turn records) and the set-up.
    """
    if transport not in ("sip", "ws", "webrtc"):
        raise ParameterError(f"pipeline calls run over 'sip', 'ws' or 'webrtc', got {transport!r}")
    if transport == "webrtc" and network != "loopback":
        raise ParameterError("WebRTC pipeline calls run on loopback (aiortc keeps wall-clock time)")
    utts = list(utterances) if utterances is not None else load_utterances(turns)
    cfg = dict(pipeline or {})
    cfg.update(vad=vad, stop_ms=float(stop_ms), llm=llm, seed=seed)
    if network not in ("loopback", "virtual"):
        raise ParameterError(f"network must be 'loopback' or 'virtual', got {network!r}")
    if (uplink is not None or downlink is not None) and network != "virtual":
        raise ParameterError("uplink/downlink impairments need network='virtual'")
    extra = {"network": network, "uplink": uplink, "downlink": downlink}
    runner = {"sip": _sip_conversation, "ws": _ws_conversation, "webrtc": _webrtc_conversation}[transport]
    res = await runner(utts, codec=codec, cfg=cfg, jitter_buffer=jitter_buffer, seed=seed, **extra,
                       driver_opts=dict(barge_in_after_s=barge_in_after_s, hangup_after_s=hangup_after_s,
                                        reply_timeout_s=reply_timeout_s))  # fmt: skip
    records, agent_summary, setup = res
    out: dict[str, Any] = {"transport": transport, **setup, "vad": vad, "stop_ms": float(stop_ms),
                           "llm": agent_summary.get("responder", {}), "turns_requested": turns}  # fmt: skip
    out.update(summarise_turns(records))
    out["turns"] = records
    out["agent"] = agent_summary.get("turns", [])
    if any(u.synthetic for u in utts):
        out["warnings"] = ["caller utterances are eSpeak NG speech (no natural corpus found): set VOICELAB_DATA"]
    return out


async def _sip_conversation(utts, *, codec, cfg, jitter_buffer, seed, driver_opts, network="loopback", uplink=None,
                            downlink=None):  # fmt: skip
    from .agent import Agent
    from .calls import open_caller
    from .net.iface import LoopbackInterface
    from .rtp.live import LiveAudioStream
    from .sip.ua import CallEstablished, CallFailed

    loop = asyncio.get_running_loop()
    if network == "virtual":
        from .net.vnet_iface import VirtualHostInterface
        from .vnetcall import SIP_PORT, build_topology

        net, info = build_topology("open", "open", seed=seed, uplink=uplink, downlink=downlink, trace=False)
        ifc, ifa = VirtualHostInterface(net, "caller"), VirtualHostInterface(net, "agent")
        caller_host, agent_opts = info["caller"], {"host": info["agent"], "port": SIP_PORT}
    else:
        ifc = ifa = LoopbackInterface(loop)
        caller_host, agent_opts = "127.0.0.1", {}
    agent = Agent(codecs=[codec], mode="pipeline", pipeline=cfg, jitter_buffer=jitter_buffer, iface=ifa, seed=seed + 1,
                  **agent_opts)  # fmt: skip
    await agent.start()
    ua, sip = await open_caller(ifc, codec=codec, rtcp_mux=True, seed=seed, host=caller_host)
    stream = None
    try:
        media_port = ifc.free_port("udp")
        call = ua.invite(agent.uri, now=loop.time(), media_port=media_port)
        sip.flush()
        ev = await sip.wait_for(CallEstablished, CallFailed)
        if isinstance(ev, CallFailed):
            raise ParameterError(f"the call to the pipeline agent failed: {ev.status}")
        stream = LiveAudioStream.for_media(ifc, call.media, local_addr=(caller_host, media_port),
                                           jitter_buffer=jitter_buffer, seed=seed + 2, cname="caller@voicelab",
                                           track=True, source_filter=False)  # fmt: skip
        await stream.open()
        stream.set_remote((call.media.remote_address, call.media.remote_port))
        records, summary, agent_stream = await converse_over_sip(agent, stream, call, ua, sip, utts,
                                                                 driver_opts=driver_opts)
        setup = {"codec": call.media.codec, "jitter_buffer": jitter_buffer, "net": network,
                 "agent_errors": list(agent.errors), **_lateness(stream.stats, agent_stream.stats)}  # fmt: skip
        return records, summary, setup
    finally:
        if stream is not None:
            await stream.close()
        await sip.close()
        await agent.close()


async def await_conversation(driver: Any, utts: list[Any]) -> None:
    """Wait until ``driver`` has played every utterance and heard its replies, within a
    budget of each utterance's length + its reply timeout + 2 s (+ 5 s); turns still
    unanswered then are recorded as such (no exception)."""
    budget = sum(len(u.samples) / 16000 + driver.reply_timeout_s + 2.0 for u in utts) + 5.0
    try:
        await asyncio.wait_for(asyncio.shield(driver.done), budget)
    except asyncio.TimeoutError:
        pass  # turns without an answer are recorded as such


@contextlib.asynccontextmanager
async def webrtc_conversation_caller(url: str, driver: Any, *, codec: str, jitter_buffer: str) -> Any:
    """The lab's aiortc caller whose mouth and ear are ``driver``'s, connected to the
    signaling server at ``url`` and talking; closed (signaling, then the peer) on exit.

    Yields
    ------
    (pc, track, sink, client)
        The peer connection, the caller's mouth (:class:`~voicelab.webrtc.media.SourceTrack`
        fed by ``driver.source``), its ear (:class:`~voicelab.webrtc.media.AudioSink`
        reporting to ``driver.on_played``) and the :class:`~voicelab.webrtc.signaling.SignalingClient`.
    """
    from . import codecs
    from .net.iface import LoopbackInterface
    from .webrtc.media import AudioSink, SourceTrack
    from .webrtc.peer import make_peer_connection, prefer_codec
    from .webrtc.signaling import SignalingClient

    loop = asyncio.get_running_loop()
    c = codecs.get(codec)
    rate, F = int(c.sample_rate), int(c.frame_samples)
    iface = LoopbackInterface(loop)
    sink = AudioSink(rate, on_played=lambda frame, start: driver.on_played(frame, start, None))  # the caller's ear
    pc = make_peer_connection(iface, codec=codec, forward_to_track=False, sink=sink, jitter_buffer=jitter_buffer)
    track = SourceTrack(np.zeros(F), rate, source=driver.source)  # the caller's mouth, driven live
    client = SignalingClient(iface, url)
    try:
        pc.addTrack(track)
        prefer_codec(pc.getTransceivers()[0], codec)
        await client.dial(pc)
        track.start(loop.time() + 0.02)
        yield pc, track, sink, client
    finally:
        await client.close()
        await pc.close()


async def converse_over_sip(agent: Any, stream: Any, call: Any, ua: Any, sip: Any, utts: list[Any], *,
                            driver_opts: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    """Hold a conversation on an established SIP call with the pipeline agent, hang up, analyse it.

    The caller's side of every SIP conversation (straight to the agent, through an SBC or
    a relay): wait for the agent's stream, clear its per-packet records of the set-up,
    drive the utterances (:class:`ConversationDriver`) from the caller's open ``stream``,
    BYE when the driver is done (or its budget ran out: such turns are recorded as
    unanswered), wait for the agent to close the call, then :func:`analyse_turns`.

    Parameters
    ----------
    agent : voicelab.agent.Agent
        The pipeline agent (``mode="pipeline"``), started.
    stream : voicelab.rtp.live.LiveAudioStream
        The caller's media stream, open, its remote set, ``track=True``.
    call, ua, sip
        The established call, the caller's UA and its asyncio SIP driver.
    utts : list of Utterance
        What the caller says.
    driver_opts : dict, optional
        Keyword arguments of :class:`ConversationDriver` (barge-in, hang-up, reply timeout).

    Returns
    -------
    records : list of dict
        One analysed turn per utterance (:func:`analyse_turns`).
    summary : dict
        The agent's own record of the call (``agent.pipelines.finished``).
    agent_stream : voicelab.rtp.live.LiveAudioStream
        The agent's side of the call.
    """
    from .sip.ua import CallEnded

    loop = asyncio.get_running_loop()
    for _ in range(400):  # the agent opens its stream when it answers
        if agent.streams:
            break
        await asyncio.sleep(0.005)
    agent_stream = next(iter(agent.streams.values()))
    agent_stream.send_times, agent_stream.arrivals, agent_stream.played_at = {}, {}, {}
    agent_stream.tapped_at = {}  # when the pipeline heard each frame (its arrival tap)
    driver = ConversationDriver(utts, sample_rate=stream.tx.sample_rate, frame_ms=stream.tx.frame_ms,
                                **(driver_opts or {}))
    stream.on_played = lambda when, frame: driver.on_played(frame, when, stream.last_played_seq)
    stream.send_live("source", source=driver.source)
    await await_conversation(driver, utts)
    ua.bye(call, now=loop.time())
    sip.flush()
    await sip.wait_for(CallEnded, timeout=10.0)
    await asyncio.wait_for(agent.ended(1), 10.0)
    summary = agent.pipelines.finished.get(call.call_id, {})  # type: ignore[union-attr]
    records = analyse_turns(driver, stream, agent_stream, summary, lookahead_up_ms=stream.tx.lookahead_ms,
                            lookahead_down_ms=agent_stream.tx.lookahead_ms)
    return records, summary, agent_stream


def _lateness(caller_stats: Any, agent_stats: Any) -> dict[str, float | None]:
    """How late the caller's and the agent's send timers fired (ms, p99 and max): what a
    blocked event loop (e.g. recognition in the loop's thread) shows as."""
    out: dict[str, float | None] = {}
    for who, st in (("caller", caller_stats), ("agent", agent_stats)):
        if st is None:  # no send timer on this side (the WebRTC agent's track is paced by its playout)
            continue
        v = np.asarray(getattr(st, "send_lateness_s", []) or [0.0]) * 1000.0
        out[f"{who}_send_lateness_ms.p99"] = float(np.percentile(v, 99))
        out[f"{who}_send_lateness_ms.max"] = float(v.max())
    return out


def _topology(network: str, seed: int, uplink: Any, downlink: Any) -> tuple[Any, Any, str, str]:
    """(caller iface, agent iface, caller host, agent host) on loopback or the virtual network."""
    if network == "virtual":
        from .net.vnet_iface import VirtualHostInterface
        from .vnetcall import build_topology

        net, info = build_topology("open", "open", seed=seed, uplink=uplink, downlink=downlink, trace=False)
        return VirtualHostInterface(net, "caller"), VirtualHostInterface(net, "agent"), info["caller"], info["agent"]
    from .net.iface import LoopbackInterface

    i = LoopbackInterface(asyncio.get_running_loop())
    return i, i, "127.0.0.1", "127.0.0.1"


async def _ws_conversation(utts, *, codec, cfg, jitter_buffer, seed, driver_opts, network="loopback", uplink=None,
                           downlink=None):  # fmt: skip
    from .pipeline.core import PipelineConfig
    from .wsmedia.live import MediaStreamClient, MediaStreamServer

    ifc, ifa, _, agent_host = _topology(network, seed, uplink, downlink)
    server = MediaStreamServer(ifa, mode="pipeline", pipeline=PipelineConfig(**cfg).build, jitter_buffer=jitter_buffer,
                               host=agent_host, port=8080 if network == "virtual" else 0)  # fmt: skip
    await server.start()
    client = MediaStreamClient(ifc, server.address, jitter_buffer=jitter_buffer, seed=seed)
    try:
        await client.connect()
        session = await server.next_started()
        media = client.media
        media.first_sequence = 1  # type: ignore[union-attr]  # chunk numbers count from 1
        driver = ConversationDriver(utts, sample_rate=8000, frame_ms=20, **driver_opts)
        media.on_played = lambda f, w: driver.on_played(f, w, media.last_played_chunk)  # type: ignore[union-attr]
        media.send_live(driver.source)  # type: ignore[union-attr]
        budget = sum(len(u.samples) / 16000 + driver.reply_timeout_s + 2.0 for u in utts) + 5.0
        try:
            await asyncio.wait_for(asyncio.shield(driver.done), budget)
        except asyncio.TimeoutError:
            pass
        await client.stop()
        await asyncio.wait_for(session.ended, 10.0)
        summary = session.pipeline.summary() if session.pipeline is not None else {}
        records = analyse_turns(driver, media, session.media, summary)
        setup = {"codec": "pcmu", "jitter_buffer": jitter_buffer, "net": network, "agent_errors": list(server.errors),
                 **_lateness(media.stats, session.media.stats)}  # fmt: skip
        return records, summary, setup
    finally:
        await client.stop()
        await server.close()


async def _webrtc_conversation(utts, *, codec, cfg, jitter_buffer, seed, driver_opts, network="loopback", uplink=None,
                               downlink=None):  # fmt: skip
    """The lab's aiortc caller with a live source; the agent's WebRTC front with the pipeline.

    The breakdown is per packet where the lab's sockets and playouts recorded every packet
    of the chain, lumped otherwise (see :func:`analyse_webrtc_turns`).
    """
    from . import codecs
    from .agent import Agent
    from .webrtc.agent import serve_webrtc

    c = codecs.get(codec)
    rate = int(c.sample_rate)
    agent = Agent(codecs=[codec], mode="pipeline", pipeline=cfg, jitter_buffer=jitter_buffer, seed=seed + 1)
    await agent.start()
    agent_media: list = []  # the (track, sink) of each WebRTC call's pipeline, for the breakdown
    make_media = agent.pipeline_media

    def _pipeline_media(rate_: int, frame_samples: int):
        agent_media.append(make_media(rate_, frame_samples))
        return agent_media[-1]

    agent.pipeline_media = _pipeline_media  # type: ignore[method-assign]
    front = await serve_webrtc(agent)
    driver = ConversationDriver(utts, sample_rate=rate, frame_ms=20, **driver_opts)

    try:
        async with webrtc_conversation_caller(front.url, driver, codec=codec, jitter_buffer=jitter_buffer) as (
                pc, track, sink, client):
            await await_conversation(driver, utts)
            await client.bye()
            await asyncio.wait_for(front.ended(1), 10.0)
            (summary,) = list(agent.pipelines.finished.values())[-1:] or [{}]  # type: ignore[union-attr]
            wire = _webrtc_wire(pc, track, front, agent_media)
            records = analyse_webrtc_turns(driver, summary, lookahead_down_ms=c.lookahead_ms, wire=wire, ear=sink)
            setup = {"codec": codec, "jitter_buffer": jitter_buffer, "net": network, "agent_errors": list(front.errors),
                     **_lateness(track, None)}  # fmt: skip
        return records, summary, setup
    finally:
        await front.close()
        await agent.close()


def _webrtc_wire(pc: Any, mouth: Any, front: Any, agent_media: list) -> dict | None:
    """Per-packet times of a WebRTC conversation (one call), or None when a piece is missing.

    Caller: the frames handed to aiortc (``mouth.send_times``), the RTP packets on the wire
    both ways (its :class:`~voicelab.webrtc.peer.SocketRecord` ``rtp``), the slot that
    played each packet (its ``LabPlayout.played_at``). Agent: the same from the front's
    peer, and when its arrival tap released each packet (``LabPlayout.tapped_at``).
    """
    try:
        calls = list(front.calls.values()) + list(front.finished.values())
        apc = calls[-1].pc
        c_play = pc.getReceivers()[0].lab_playout
        a_play = apc.getReceivers()[0].lab_playout
        a_track = agent_media[-1][0]
    except (IndexError, AttributeError):
        return None
    if c_play is None or a_play is None:
        return None

    def rtp(records: list) -> dict:
        out: dict = {}
        for r in records:
            for key, t in getattr(r, "rtp", {}).items():
                out.setdefault(key, t)
        return out

    return {"caller_rtp": rtp(pc.sockets), "agent_rtp": rtp(apc.sockets), "caller_handed": list(mouth.send_times),
            "agent_handed": list(getattr(a_track, "asked_at", a_track.send_times)), "agent_heard": dict(a_play.tapped_at),
            "caller_played": dict(c_play.played_at)}  # fmt: skip


def _first_seq(rtp: dict, direction: str) -> tuple[int, int] | None:
    """(ssrc, sequence number) of the first RTP packet sent or received (by time)."""
    cands = [(t, ssrc, seq) for (d, ssrc, seq), t in rtp.items() if d == direction]
    if not cands:
        return None
    _, ssrc, seq = min(cands)
    return ssrc, seq


def _webrtc_parts(t: "CallerTurn", a: dict, wire: dict, la_down: float) -> dict[str, float]:
    """The SIP breakdown for a WebRTC turn, from per-packet times (KeyError: a piece missing).

    aiortc sends one RTP packet per frame handed to it, the sequence number +1 each, so
    frame k of a stream is the first packet's sequence number + k. Two parts more than on
    SIP: aiortc's sender on each side (frame handed over -> on the wire: the encoder and
    SRTP, on the loop).
    """
    up = _first_seq(wire["caller_rtp"], "tx")
    down = _first_seq(wire["agent_rtp"], "tx")
    if up is None or down is None:
        raise KeyError("RTP packets")
    k = t.last_frame
    seq_k = (up[1] + k) & 0xFFFF
    handed_k = wire["caller_handed"][k]
    sent_k = wire["caller_rtp"][("tx", up[0], seq_k)]
    arr_a = wire["agent_rtp"][("rx", up[0], seq_k)]
    heard, kh = _at_or_after(wire["agent_heard"], seq_k)
    # the first reply frame: the last one asked of the pipeline by the reply's start (which
    # is later than that when the first clause's synthesis finished within that call)
    asked = np.asarray(wire["agent_handed"])
    js = np.flatnonzero(asked <= a["reply_start"] + 1e-9)
    if not len(js) or a["reply_start"] - asked[js[-1]] > 0.020:
        raise KeyError("the reply's first frame")
    j = int(js[-1])
    seq_r = (down[1] + j) & 0xFFFF
    sent_r = wire["agent_rtp"][("tx", down[0], seq_r)]
    arr_c = wire["caller_rtp"][("rx", down[0], seq_r)]
    play_c = wire["caller_played"][seq_r]
    return {
        "caller_packetization": handed_k - t.speech_end,
        "caller_sender": sent_k - handed_k,
        "network_up": arr_a - sent_k,
        "agent_jitter_buffer": heard - arr_a,
        "endpointing_wait": a["speech_end"] - heard,
        "asr_final": a["asr_final"] - a["speech_end"],
        "llm_first_token": a["llm_first_token"] - a["asr_final"],
        "tts_first_audio": a["tts_first_audio"] - a["llm_first_token"],
        "agent_send_queue": wire["agent_handed"][j] - a["tts_first_audio"],
        "agent_sender": sent_r - wire["agent_handed"][j],
        "network_down": arr_c - sent_r,
        "caller_jitter_buffer": play_c - arr_c,
        "codec_lookahead_down": la_down,
    }


def analyse_webrtc_turns(driver: ConversationDriver, agent_summary: dict, *, lookahead_down_ms: float = 0.0,
                         wire: dict | None = None, ear: Any = None) -> list[dict]:  # fmt: skip
    """Per-turn records for WebRTC: the agent's stages exactly, the transport lumped in two parts.

    ``uplink_and_endpointing_ms`` (T0 -> end of utterance at the agent: packetization,
    aiortc's sender, network, the agent's jitter buffer, and the endpointing wait) and
    ``downlink_ms`` (first reply frame handed to aiortc -> first reply sample at the ear:
    sender, network, the caller's jitter buffer, the codec's look-ahead). aiortc keeps no
    per-packet send/arrival record we can read, so these two cannot be split further and
    ``residual_ms`` is not defined (the parts add up to the total by construction);
    ``reconciled`` is None.
    """
    from .pipeline.wer import wer, word_errors

    agent_turns = agent_summary.get("turns", [])
    out = []
    for i, t in enumerate(driver.turns):
        nxt = driver.turns[i + 1].speech_from if i + 1 < len(driver.turns) else float("inf")
        heard = [a for a in agent_turns if t.speech_from - EARLY_VAD_S <= a["speech_start"] < min(nxt, t.speech_end + 1.0)]
        text = " ".join(a["text"] or "" for a in heard if a["text"] is not None)
        e, n = word_errors(t.utterance.transcript, text)
        rec: dict[str, Any] = {"turn": i, "utterance": t.utterance.name, "transcript": t.utterance.transcript,
                               "recognised": text, "agent_turns": len(heard), "barge_in": t.barge_in,
                               "outcome": t.outcome, "wer": wer(t.utterance.transcript, text), "word_errors": e,
                               "words": n, "synthetic_speech": t.utterance.synthetic}  # fmt: skip
        answered = [a for a in heard if a["reply_start"] is not None and t.reply_onset is not None
                    and a["reply_start"] <= t.reply_onset]  # fmt: skip
        if t.reply_onset is None or not answered:
            rec["outcome"] = t.outcome if t.outcome != "ok" else "no_reply"
            rec["reason"] = "no reply heard"
            out.append(rec)
            continue
        a = answered[-1]
        rec.update(total_ms=(t.reply_onset - t.speech_end) * 1000.0, server_ms=a["server_ms"], agent_reason=a["reason"],
                   llm_modelled=a["llm_modelled"],
                   uplink_and_endpointing_ms=(a["speech_end"] - t.speech_end) * 1000.0,
                   asr_final_ms=(a["asr_final"] - a["speech_end"]) * 1000.0,
                   llm_first_token_ms=(a["llm_first_token"] - a["asr_final"]) * 1000.0,
                   tts_first_audio_ms=(a["tts_first_audio"] - a["llm_first_token"]) * 1000.0,
                   agent_send_queue_ms=(a["reply_start"] - a["tts_first_audio"]) * 1000.0,
                   downlink_ms=(t.reply_onset - a["reply_start"]) * 1000.0,
                   downlink_includes_codec_lookahead_ms=lookahead_down_ms,
                   reconciled=None,
                   reason="WebRTC: no per-packet times; transport parts are lumped")  # fmt: skip
        if wire is not None:
            try:
                parts = _webrtc_parts(t, a, wire, lookahead_down_ms / 1000.0)
            except (KeyError, IndexError, ValueError) as exc:
                rec["reason"] = f"WebRTC: per-packet breakdown unavailable ({exc.args[0] if exc.args else exc!r} missing)"
            else:  # the lumped parts are kept aside (they would count the same time twice)
                rec["lumped_ms"] = {k: rec.pop(f"{k}_ms") for k in ("uplink_and_endpointing", "downlink")}
                rec.update({f"{k}_ms": v * 1000.0 for k, v in parts.items()})
                total_s = sum(parts.values()) * 1000.0
                rec["breakdown_sum_ms"] = total_s
                rec["residual_ms"] = rec["total_ms"] - total_s
                rec["reconciled"] = abs(rec["residual_ms"]) <= 2.0
                rec.pop("reason", None)
        if ear is not None:
            _barge_in(rec, driver, i, ear, agent_turns)
            if wire is not None and rec.get("barge_in_detect_ms") is not None and "barge_in_stop_ms" in rec:
                bt = driver.turns[i + 1]
                try:
                    chain = _webrtc_barge_chain(bt.speech_from + rec["barge_in_stop_ms"] / 1000.0,
                                                bt.speech_from + rec["barge_in_detect_ms"] / 1000.0, wire)  # fmt: skip
                except (KeyError, IndexError, ValueError) as exc:
                    rec["barge_in_chain_note"] = f"barge-in chain unavailable ({exc.args[0] if exc.args else exc!r} missing)"
                else:
                    rec["barge_in_chain_ms"] = chain
        out.append(rec)
    return out


def _webrtc_barge_chain(stop: float, decision: float, wire: dict) -> dict[str, float]:
    """The barge-in stop's path after the agent's decision, for the reply frame heard last (ms).

    The frame whose playout slot holds the last audible sample (``stop``): when the agent
    handed it to aiortc relative to its barge-in ``decision`` (``after_decision``: <= 0 for a
    frame already asked for, at most one tick after it), aiortc's sender, the network, the
    caller's jitter buffer, and how far into its slot the sound ended (``frame_tail``, with
    the codec's look-ahead). ``decision + sum(parts) == stop`` exactly.
    """
    down = _first_seq(wire["agent_rtp"], "tx")
    if down is None:
        raise KeyError("RTP packets")
    ssrc, seq0 = down
    heard = [(t, q) for q, t in wire["caller_played"].items() if t < stop]
    if not heard:
        raise KeyError("the last reply frame played")
    t_play, q = max(heard)
    handed = wire["agent_handed"][(q - seq0) & 0xFFFF]
    sent = wire["agent_rtp"][("tx", ssrc, q)]
    arr = wire["caller_rtp"][("rx", ssrc, q)]
    return {"after_decision": (handed - decision) * 1000.0, "agent_sender": (sent - handed) * 1000.0,
            "network_down": (arr - sent) * 1000.0, "caller_jitter_buffer": (t_play - arr) * 1000.0,
            "frame_tail": (stop - t_play) * 1000.0}  # fmt: skip


def _barge_in(rec: dict, driver: ConversationDriver, i: int, ear: Any, agent_turns: list[dict]) -> None:
    """``barge_in_stop_ms`` / ``barge_in_detect_ms`` of turn ``i`` when the next turn talked over its reply."""
    if i + 1 >= len(driver.turns) or not driver.turns[i + 1].barge_in:
        return
    bt = driver.turns[i + 1]
    stop = _stop_at_ear(ear, bt.speech_from, bt.speech_end)
    if stop is not None:
        rec["barge_in_stop_ms"] = (stop - bt.speech_from) * 1000.0
    bi = [x["barge_in"] for x in agent_turns if x.get("barge_in") is not None
          and bt.speech_from - 0.05 <= x["barge_in"] <= bt.speech_end + 1.0]  # fmt: skip
    if bi:
        rec["barge_in_detect_ms"] = (min(bi) - bt.speech_from) * 1000.0
