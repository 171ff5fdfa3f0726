"""The ``voicelab`` command line.

Every sub-command calls the same functions a notebook would. Errors a user can cause
(bad file, unknown codec, impossible parameter) print one line, ``voicelab: error: ...``,
and exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ParameterError, VoicelabError

__all__ = ["main"]


def _float_arg(name: str, lo: float | None = None, hi: float | None = None):
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
            raise argparse.ArgumentTypeError(f"{name} {v:g} is outside {rng}")
        return v

    return conv


def _print_table(d: dict[str, Any]) -> None:
    width = max(len(k) for k in d)
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
        print(f"  {k:<{width}}  {v}")


# --------------------------------------------------------------- simulate
def _add_channel_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network path (sim channel model)")
    g.add_argument("--preset", metavar="NAME", help="start from a named network preset (lan, wifi, lte, 3g, satellite, congested)")
    g.add_argument("--loss", type=_float_arg("loss", 0.0, 1.0), metavar="P", help="packet loss rate, 0..1 (e.g. 0.05)")
    g.add_argument("--burst", type=_float_arg("burst", 1.0), metavar="MEAN", help="mean loss burst length in packets (Gilbert-Elliott); omit for random loss")
    g.add_argument("--delay-ms", type=_float_arg("delay", 0.0, 10000.0), metavar="D", help="one-way network delay (ms)")
    g.add_argument("--jitter-ms", type=_float_arg("jitter", 0.0, 5000.0), metavar="J", help="delay variation (ms)")
    g.add_argument("--jitter-dist", choices=["normal", "uniform", "pareto"], help="jitter distribution")
    g.add_argument("--reorder", action="store_true", default=None, help="let jitter reorder packets")
    g.add_argument("--bandwidth-kbps", type=_float_arg("bandwidth", 1.0), metavar="KBPS", help="bottleneck rate")
    g.add_argument("--queue-packets", type=int, metavar="N", help="drop-tail queue limit at the bottleneck")


def _channel_from_args(args: argparse.Namespace):
    from .net import ChannelConfig, preset

    cfg = preset(args.preset) if args.preset else ChannelConfig()
    changes = {
        "loss_rate": args.loss,
        "burst_length": args.burst,
        "delay_ms": args.delay_ms,
        "jitter_ms": args.jitter_ms,
        "jitter_distribution": args.jitter_dist,
        "reorder": args.reorder,
        "bandwidth_kbps": args.bandwidth_kbps,
        "queue_packets": args.queue_packets,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("loss_rate", cfg.loss_rate) >= 1.0:
        raise ParameterError("loss 1 would lose every packet; use a loss rate below 1")
    return cfg.with_(**changes) if changes else cfg


def _scenario_from_args(args: argparse.Namespace):
    from .sim import Scenario

    params: dict[str, Any] = {}
    if args.bitrate is not None:
        params["bitrate"] = args.bitrate
    if args.frame_ms is not None:
        params["frame_ms"] = args.frame_ms
    if args.dtx:
        params["dtx"] = True
    if args.packet_loss_perc is not None:
        params["packet_loss_perc"] = args.packet_loss_perc
    return Scenario(
        codec=args.codec,
        codec_params=params,
        channel=_channel_from_args(args),
        jitter_buffer=args.jitter_buffer,
        plc=args.plc,
        fec=args.fec,
        speech=args.speech,
        input=args.input,
        seed=args.seed,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from .sim import simulate_call

    scn = _scenario_from_args(args)
    res = simulate_call(scn)
    if args.save_audio:
        from .audio import write_wav

        out = Path(args.save_audio)
        write_wav(out / "reference.wav", res.reference, res.sample_rate)
        write_wav(out / "degraded.wav", res.degraded, res.sample_rate)
    if args.json:
        print(res.to_json())
    else:
        print(f"voicelab simulate: {scn.codec} over {scn.channel.describe() if hasattr(scn.channel, 'describe') else scn.channel}")
        _print_table(res.metrics)
        for w in res.warnings:
            print(f"  note: {w}")
    return 0


# ------------------------------------------------------------------- call
def _user_pass(text: str | None, flag: str) -> tuple[str, str] | None:
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ParameterError(f"{flag} must be USER:PASS, got {text!r}")
    return user, password


def _print_result(res: dict, as_json: bool) -> None:
    if as_json:
        from .sim.engine import _jsonable

        print(json.dumps(_jsonable(res), sort_keys=True, allow_nan=False))
    else:
        _print_table({k: v for k, v in res.items() if k != "warnings"})
        for w in res.get("warnings", []):
            print(f"  note: {w}")


def _pipeline_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pipeline agent (--agent pipeline / --mode pipeline)")
    g.add_argument("--vad", default="webrtc", choices=["webrtc", "silero"], help="voice activity detector")
    g.add_argument("--stop-ms", type=_float_arg("stop-ms", 0.0, 5000.0), default=300.0, metavar="MS",
                   help="end-of-utterance silence")
    g.add_argument("--llm", default="model", metavar="model|URL",
                   help="'model': scripted replies with modelled LLM latency; or an OpenAI-compatible base URL")
    g.add_argument("--asr-adapt", default="on", metavar="on|off|FILE",
                   help="narrowband (8 kHz) calls: 'on' applies the recogniser's shipped MLLR adaptation to the "
                        "telephone band, 'off' the plain 16 kHz model, FILE an MLLR transform of your own "
                        "(docs/agent-turn.md); wideband calls never use one")


def _asr_adapt(args: argparse.Namespace) -> bool | str:
    """``--asr-adapt`` as :class:`PipelineConfig`'s ``asr_adapt``; a missing FILE is a ParameterError."""
    v = getattr(args, "asr_adapt", "on")
    if v in ("on", "off"):
        return v == "on"
    from pathlib import Path

    if not Path(v).is_file():
        raise ParameterError(f"--asr-adapt: expected on, off or an MLLR transform file, got {v!r} (no such file)")
    return v


def _pipeline_call(args: argparse.Namespace, net: Any) -> int:
    import asyncio

    from .turns import pipeline_call

    if args.transport == "webrtc" and args.net != "loopback":
        raise ParameterError("--agent pipeline over WebRTC runs on --net loopback (aiortc keeps wall-clock time)")
    if args.target or args.pcap or args.srtp or args.auth or args.sip_transport != "udp":
        raise ParameterError("--agent pipeline calls the lab's own agent over SIP/UDP or WS (no --target, --pcap, --srtp, --auth)")
    if args.net == "sim":
        if args.transport != "sip":
            raise ParameterError("--net sim models the network (no --transport)")
        from .sim.turns import sim_turns

        res = sim_turns(codec=args.codec, channel=net, turns=args.turns, jitter_buffer=args.jitter_buffer,
                        vad=args.vad, stop_ms=args.stop_ms, seed=args.seed, asr_adapt=_asr_adapt(args))  # fmt: skip
        if not args.json:
            res = {k: v for k, v in res.items() if k != "turns"}
        _print_result(res, args.json)
        return 0
    if net is not None and args.net != "vnet":
        raise ParameterError("impairments with --agent pipeline need --net vnet or --net sim")
    kw = dict(transport=args.transport, codec=args.codec, turns=args.turns, vad=args.vad, stop_ms=args.stop_ms,
              llm=None if args.llm == "model" else args.llm, jitter_buffer=args.jitter_buffer, seed=args.seed,
              barge_in_after_s=args.barge_in_after, network="virtual" if args.net == "vnet" else "loopback",
              uplink=net, downlink=net, pipeline={"asr_adapt": _asr_adapt(args)})  # fmt: skip
    if args.virtual_time:
        from .net.vclock import run_virtual

        res = run_virtual(pipeline_call(**kw), stall_timeout=30.0)
    else:
        res = asyncio.run(pipeline_call(**kw))
    if not args.json:
        res = {k: v for k, v in res.items() if k not in ("turns", "agent") and not k.endswith((".p90", ".max"))}
    _print_result(res, args.json)
    return 0


def _ice_servers(text: str | None) -> list:
    """``--ice-servers`` JSON: a list of RTCIceServer objects; ParameterError if not."""
    if not text:
        return []
    try:
        ice = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParameterError(f"--ice-servers is not valid JSON ({exc.msg} at character {exc.pos}): "
                             "give a list such as '[{\"urls\": \"stun:127.0.0.1:3478\"}]'") from None
    if isinstance(ice, dict):
        ice = [ice]
    if not isinstance(ice, list) or not all(isinstance(s, dict) and "urls" in s for s in ice):
        raise ParameterError(f"--ice-servers must be a JSON list of objects with \"urls\", got {text!r}")
    return ice


def _check_writable_file(path: str, flag: str) -> None:
    """Fail now (ParameterError) if ``path`` cannot be written, not after a whole call."""
    p = Path(path)
    existed = p.exists()
    try:
        if p.is_dir():
            raise IsADirectoryError(21, "is a directory")
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("ab"):
            pass
    except OSError as exc:
        raise ParameterError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    if not existed:
        p.unlink(missing_ok=True)


def _is_bot_url(target: str | None) -> bool:
    """Whether ``--target`` names a bot by URL (``pipecat+ws://``, ``pipecat+webrtc://``) rather than a SIP URI."""
    return bool(target) and target.split("://", 1)[0].lower().startswith("pipecat+") and "://" in target


def _pipecat_call(args: argparse.Namespace, net: Any) -> int:
    import asyncio

    from .pipecat_turns import pipecat_call

    if args.transport not in ("ws", "webrtc", "sip"):
        raise ParameterError("--agent pipecat runs over --transport ws (Twilio serializer), webrtc (SmallWebRTC) "
                             "or sip (SIP caller -> media-stream bridge -> the bot's WebSocket)")  # fmt: skip
    if args.net != "loopback" or args.virtual_time:
        raise ParameterError("--agent pipecat runs on loopback with real sockets (impairment flags use the lab's "
                             "userspace relays; no --net vnet/sim)")  # fmt: skip
    external = _is_bot_url(args.target)
    if args.pcap or (args.target and not external):
        raise ParameterError("--agent pipecat: --pcap is not supported, and --target takes a bot URL "
                             "(pipecat+ws://HOST:PORT/PATH or pipecat+webrtc://HOST:PORT/PATH)")  # fmt: skip
    kw: dict[str, Any] = {}
    if external:
        from .pipecat_turns import parse_bot_target

        via = parse_bot_target(args.target)[0]
        if args.transport not in ("sip", via):  # sip: --transport's default, i.e. not given
            raise ParameterError(f"--target {args.target} is reached over {via}, not --transport {args.transport}")
        if args.agent == "pipeline":
            raise ParameterError("--target with a bot URL calls that bot: no --agent pipeline")
        if args.srtp or args.auth or args.sip_transport != "udp":
            raise ParameterError("--srtp, --auth and --sip-transport are for SIP calls, not a bot URL")
        kw = {"target": args.target, "transport": via}
    # the bot's VAD is always Pipecat's own SileroVADAnalyzer (--vad is the lab agent's)
    if args.llm != "model":
        raise ParameterError("--agent pipecat uses the scripted stand-in LLM (--llm model)")
    kw.setdefault("transport", args.transport)
    res = asyncio.run(pipecat_call(turns=args.turns, stop_ms=args.stop_ms, jitter_buffer=args.jitter_buffer,
                                   seed=args.seed, net=net, barge_in_after_s=args.barge_in_after, **kw))  # fmt: skip
    if not args.json:
        res = {k: v for k, v in res.items() if k not in ("turns", "agent", "bot") and not k.endswith((".p90", ".max"))
               and not (external and v is None and k.startswith("turn."))}  # fmt: skip
    _print_result(res, args.json)
    return 0


def cmd_call(args: argparse.Namespace) -> int:
    import asyncio

    from .net import ChannelConfig

    chan = _channel_from_args(args)
    net = None if chan == ChannelConfig() else chan
    if args.path:
        from .hybrid import path_call

        if args.transport != "sip" or args.target or args.net == "sim":
            raise ParameterError("--path runs its own legs (PSTN model + live SIP trunk): no --transport, --target "
                                 "or --net sim with it")
        if net is not None and args.net != "vnet":
            raise ParameterError("impairment flags with --path apply to the carrier link of --net vnet (the lab's link model)")
        if args.agent == "pipeline":  # turns over the path: virtual clock (+trunk), real time (+sbc, +relay)
            from .hybrid import path_turns

            if args.net != "loopback" or net is not None:
                raise ParameterError("--path with --agent pipeline runs on the virtual clock (+sbc / +relay: in real "
                                     "time on loopback): no --net or impairment flags with it")
            res = path_turns(args.path, turns=args.turns, seed=args.seed or 0, stop_ms=args.stop_ms,
                             llm=None if args.llm == "model" else args.llm, jitter_buffer=args.jitter_buffer)
            if not args.json:
                res = {k: v for k, v in res.items() if k not in ("turns", "agent", "phone_side")
                       and not k.endswith((".p90", ".max"))}
            _print_result(res, args.json)
            return 0
        browser = args.path.strip().lower().startswith("browser")
        res = path_call(args.path, seconds=args.duration, speech=args.speech, seed=0 if args.seed is None else args.seed,
                        jitter_buffer=args.jitter_buffer, net=args.net,
                        **({"links": {"carrier": net}} if net is not None else {}),
                        **({"codec": args.codec} if browser else {}))
        if args.json:
            _print_result(res, True)
            return 0
        if browser:
            print(f"{res['path']}: WebRTC {res['webrtc_codec']} <-> SIP {res['sip_codec']}"
                  + (" (payloads passed through)" if res["passthrough"] else " (transcoded)"))
            far = "phone" if res.get("pstn") else "agent"
            for d in ("browser_to_agent", "agent_to_browser"):
                print(f"  {d.replace('_', ' ').replace('agent', far)}:")
                for h in res[f"{d}.hops"]:
                    v = h["delay_ms"]
                    print(f"    {'-' if v is None else f'{v:7.2f}'} ms  {h['how']:<23}  {h['hop']}")
                print(f"    {res[f'{d}.total_ms']:7.2f} ms  total measured end to end; PESQ-NB {res[f'{d}.pesq_nb']:.2f}, "
                      f"PESQ-WB {res[f'{d}.pesq_wb']:.2f}")
            return 0
        print(f"{res['path']}: phone -> agent, one way"
              + (" (live leg on the namespace chain: trunk -- carrier edge -- agent)" if res.get("net") == "vnet" else ""))
        for h in res["hops"]:
            d = h["delay_ms"]
            print(f"  {'-' if d is None else f'{d:7.2f}'} ms  {h['how']:<18}  {h['hop']}")
        total = res["phone_to_agent_ms"]
        print(f"  {'-' if total is None else f'{total:7.2f}'} ms  total (PSTN side measured through the lab + live leg); "
              f"G.114 budget {res['g114_budget_ms']:g} ms: {'within' if res['within_g114'] else 'EXCEEDED'}")
        def num(v: Any, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        print(f"  PESQ-NB after the PSTN side {num(res['pstn_pesq_nb'], '.2f')}, on the trunk leg "
              f"{num(res['trunk_pesq_nb'], '.2f')}; setup {num(res['setup_ms'], '.1f')} ms"
              + (f"; SBC {res['sbc']}" if res["sbc"] else ""))
        for d, label in (("caller_to_agent", "phone -> agent"), ("agent_to_caller", "agent -> phone")):
            e = (res.get("end_to_end") or {}).get(d) or {}
            if e.get("pesq_nb") is not None:
                print(f"  end to end, {label}: PESQ-NB {e['pesq_nb']:.2f}, E-model R {e['r_factor']:.1f} "
                      f"(MOS-CQE {e['mos_cqe']:.2f}), {e['mouth_to_ear_ms']:.1f} ms by cross-correlation")
        return 0
    if _is_bot_url(args.target):  # a bot running elsewhere, by URL: the Pipecat caller
        if args.seed is None:
            args.seed = 0
        return _pipecat_call(args, net)
    auth = _user_pass(args.auth, "--auth")
    target_seed = args.seed  # None: a call to another peer draws fresh identifiers (SIP wants them unique)
    if args.seed is None:
        args.seed = 0  # the lab's own calls stay reproducible
    if args.ca_file and not args.target:
        raise ParameterError("--ca-file is for --target calls over TLS (the built-in agent's test CA is used otherwise)")
    ice = _ice_servers(args.ice_servers)
    if args.pcap:
        _check_writable_file(args.pcap, "--pcap")
    sip_only = {"--sip-transport": args.sip_transport != "udp", "--srtp": args.srtp, "--auth": auth is not None,
                "--target": bool(args.target)}
    if args.transport != "sip" and any(sip_only.values()):
        bad = ", ".join(k for k, v in sip_only.items() if v)
        raise ParameterError(f"{bad} only apply to --transport sip")
    if args.transport != "ws" and args.tcp_recovery != "linux":
        raise ParameterError("--tcp-recovery only applies to --transport ws (the TCP impairment relay)")
    if args.virtual_time and args.net != "vnet":
        raise ParameterError("--virtual-time needs --net vnet (real sockets run in real time)")
    if args.agent == "pipeline":
        return _pipeline_call(args, net)
    if args.agent == "pipecat":
        return _pipecat_call(args, net)
    if args.net == "sim":
        raise ParameterError("--net sim is for --agent pipeline (other calls: voicelab run for sim mode)")
    if args.net == "vnet":
        if args.transport != "sip" or args.target or args.pcap:
            raise ParameterError("--net vnet runs the lab's SIP caller and agent (no --target, --pcap or other transports yet)")
        from .vnetcall import vnet_sip_call

        kw = dict(caller_nat=args.caller_nat, agent_nat=args.agent_nat, method=args.method, codec=args.codec,
                  seconds=args.duration, speech=args.speech, uplink=net, downlink=net,
                  jitter_buffer=args.jitter_buffer, seed=args.seed)
        import time

        marks = [time.perf_counter()]
        kw["on_media_done"] = lambda: marks.append(time.perf_counter())
        if args.virtual_time:
            from .net.vclock import run_virtual

            res = run_virtual(vnet_sip_call(**kw))
        else:
            res = asyncio.run(vnet_sip_call(**kw))
        marks.append(time.perf_counter())
        _print_result(res, args.json)
        if len(marks) == 3:  # wall times stay out of the (deterministic) result
            print(f"voicelab call: {res['seconds']:g} s of media took {marks[1] - marks[0]:.2f} s of wall time "
                  f"({100 * (marks[1] - marks[0]) / res['seconds']:.1f} %); scoring took {marks[2] - marks[1]:.2f} s",
                  file=sys.stderr)
        return 0
    if args.transport == "ws":
        if args.pcap:
            raise ParameterError("--pcap records SIP/RTP calls; the WebSocket path has no pcap writer yet")
        from .wsmedia.live import ws_call

        if args.codec not in ("pcmu", "g711u", "PCMU"):
            raise ParameterError("--transport ws carries 8 kHz mu-law (the media-streams format): use --codec pcmu")
        res = asyncio.run(ws_call(seconds=args.duration, speech=args.speech, input=args.input,
                                  jitter_buffer=args.jitter_buffer, net=net, seed=args.seed,
                                  tcp_options={"recovery": args.tcp_recovery}))
        _print_result(res, args.json)
        return 0
    if args.transport == "webrtc":
        from .webrtc.call import webrtc_call

        if args.pcap:
            raise ParameterError("--pcap is not available for WebRTC calls (DTLS-SRTP)")
        res = asyncio.run(webrtc_call(codec=args.codec, bitrate=args.bitrate, fec=args.fec, seconds=args.duration,
                                      speech=args.speech, input=args.input, jitter_buffer=args.jitter_buffer,
                                      ice_servers=ice, relay_only=args.relay_only, net=net, seed=args.seed,
                                      mode=args.webrtc_mode))  # fmt: skip
        _print_result(res, args.json)
        return 0
    if args.target:
        from .calls import dial

        if net is not None or args.pcap:
            raise ParameterError("--target calls another peer directly: impairment flags and --pcap need the built-in agent")
        res = asyncio.run(dial(args.target, codec=args.codec, seconds=args.duration, speech=args.speech, input=args.input,
                               jitter_buffer=args.jitter_buffer, seed=target_seed, transport=args.sip_transport,
                               srtp=args.srtp, credentials=auth, ca_file=args.ca_file))  # fmt: skip
        _print_result({k: v for k, v in res.items() if k not in ("sent", "received")}, args.json)
        return 0
    from .calls import sip_call

    res = asyncio.run(sip_call(codec=args.codec, seconds=args.duration, speech=args.speech, input=args.input,
                               jitter_buffer=args.jitter_buffer, net=net, seed=args.seed, pcap=args.pcap,
                               sip_transport=args.sip_transport, srtp=args.srtp, auth=auth))  # fmt: skip
    _print_result(res, args.json)
    return 0


def _host_port(text: str, flag: str) -> tuple[str, int]:
    try:
        host, port_text = text.rsplit(":", 1)
        return host.strip("[]"), int(port_text)
    except ValueError:
        raise ParameterError(f"{flag} must be HOST:PORT, got {text!r}") from None


def _descriptors_for(needed: int) -> None:
    """Raise this process's soft descriptor limit toward ``needed`` (up to the hard
    limit), so the connection cap, not EMFILE, is what refuses connections; a note on
    stderr when the hard limit is lower."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            new = soft
        if new < needed:
            print(f"voicelab: note: only {new} file descriptors (ulimit -n); --max-connections and --max-calls "
                  f"need about {needed}: lower them or raise the limit", file=sys.stderr)


def cmd_agent_serve(args: argparse.Namespace) -> int:
    import asyncio

    from .agent import Agent
    from .cli_workers import default_workers, in_use as _in_use, parse_workers, split_max_calls

    host, port = _host_port(args.sip, "--sip")
    worker = args.worker_index
    if worker is not None:  # Ctrl-C at a terminal reaches the whole group: the parent alone acts on it, and
        import signal  # stops this worker with one SIGTERM (a second signal would stop it at once, unordered)

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    given = args.workers
    args.workers = parse_workers(given)
    if given is None or str(given).strip().lower() == "auto":
        cores = default_workers()
        why = f"one per core: {cores} core{'s' if cores > 1 else ''} available"
    else:
        why = ""  # asked for
    if isinstance(args.max_calls, bool) or args.max_calls < 1:
        raise ParameterError(f"--max-calls must be >= 1 (the agent's concurrent calls, over all workers), got {args.max_calls}")
    workers = len(split_max_calls(args.max_calls, args.workers)) if worker is None else 1
    codecs_list = [c.strip() for c in args.codecs.split(",") if c.strip()]
    options = dict(host=host, port=port, transport=args.transport, codecs=codecs_list, mode=args.mode,
                   reuse_port=worker is not None,
                   speech=args.speech, auth=_user_pass(args.auth, "--auth"), srtp=args.srtp,
                   max_calls=args.max_calls, tls_cert=args.tls_cert, tls_key=args.tls_key,
                   media_timeout=args.media_timeout, session_expires=args.session_expires)
    if worker is not None:  # names unique over the workers writing into one record folder
        options["record_prefix"] = f"w{worker}-"
    if not args.no_overload_control:
        from .sip.overload import OverloadControl

        if args.max_lag_ms is not None and not 1 <= args.max_lag_ms <= 10000:
            raise ParameterError(f"--max-lag-ms must be 1..10000, got {args.max_lag_ms}")
        if args.max_rate is not None and not args.max_rate > 0:
            raise ParameterError(f"--max-rate must be > 0 calls/s, got {args.max_rate}")
        options["overload"] = OverloadControl(max_calls=args.max_calls if args.max_calls >= 1 else None,
                                              max_rate=args.max_rate, max_lag=args.max_lag_ms / 1000.0,
                                              max_queue=args.max_queue if args.max_queue >= 1 else None,
                                              max_queue_delay=args.max_queue_delay_ms / 1000.0 if args.max_queue_delay_ms > 0 else None)
    if args.auth_algorithms:
        options["auth_algorithms"] = tuple(a.strip() for a in args.auth_algorithms.split(",") if a.strip())
    if args.mode == "pipeline":
        options["pipeline"] = dict(vad=args.vad, stop_ms=args.stop_ms, llm=None if args.llm == "model" else args.llm,
                                   asr_adapt=_asr_adapt(args))
    from .sip.transport import ConnectionLimits

    options["connection_limits"] = ConnectionLimits(max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                                                    header_timeout=args.header_timeout)  # fmt: skip
    agent = Agent(**options)  # every option checked here, once, before any worker starts
    if args.ws:
        ws_where = _host_port(args.ws, "--ws")
        if agent.mode not in ("play", "echo", "pipeline"):
            raise ParameterError("--ws serves --mode play, echo or pipeline")
    if workers > 1:
        from .cli_workers import serve_workers

        return serve_workers(args, getattr(args, "_argv", None) or sys.argv[1:], host, port,
                             webrtc=_host_port(args.webrtc, "--webrtc") if args.webrtc else None,
                             ws=ws_where if args.ws else None, why=why)
    # per call: RTP and RTCP sockets, a duplicate of the RTP socket for direct sends, one more when
    # reading in the tick, and the SIP side's share
    _descriptors_for(args.max_connections + 6 * args.max_calls + 64)
    note = None  # why one process, when the user did not ask for exactly one
    if worker is None and args.workers > 1:
        note = f"1 process, not {args.workers}: --max-calls {args.max_calls} is one call"
    elif worker is None and (given is None or str(given).strip().lower() == "auto"):
        note = f"1 process ({why}; --workers N for more)"

    async def run() -> None:
        from .rtp.pacer import pacer_for

        pacer = pacer_for(asyncio.get_running_loop())  # the media pacer's settings
        if args.tick_ms is not None:
            pacer.tick_s = args.tick_ms / 1000.0
        pacer.read_in_tick = bool(args.read_in_tick)
        if not args.native_media:  # --no-native-media wins over VOICELAB_NATIVE_MEDIA
            pacer.disable_native()
        elif not pacer.enable_native() and args.mode == "echo":  # (the default play mode stays quiet on stderr)
            print("voicelab agent: the native media engine is not available here (not built: no C compiler at "
                  "install, or VOICELAB_NO_EXTENSIONS=1); media runs in Python", file=sys.stderr, flush=True)
        try:
            await agent.start()
        except OSError as exc:
            await agent.close()
            raise _in_use(exc, f"SIP over {args.transport.upper()}", args.sip) from None
        webrtc = wsfront = None
        try:
            extras = [f"mode {args.mode}"] + (["digest auth"] if args.auth else []) + (["SRTP required"] if args.srtp else [])
            if args.mode in _NATIVE_MODES and pacer.native is not None:
                extras.append("native media engine")
            if note:
                extras.append(note)
            print(f"voicelab agent: {agent.uri}, codecs {','.join(codecs_list)}, {', '.join(extras)}", flush=True)
            if agent.ca_file:
                print(f"  TLS test CA for clients: {agent.ca_file}", flush=True)
            if args.webrtc:
                from .webrtc.agent import serve_webrtc

                whost, wport = _host_port(args.webrtc, "--webrtc")
                try:
                    webrtc = await serve_webrtc(agent, host=whost, port=wport)
                except OSError as exc:
                    raise _in_use(exc, "WebRTC signaling", args.webrtc) from None
                print(f"  WebRTC: {webrtc.url} (signaling + browser client page)", flush=True)
            if args.ws:  # media streams over a WebSocket, the same mode (and pipeline class)
                from .wsmedia.live import MediaStreamServer

                if agent.mode not in ("play", "echo", "pipeline"):
                    raise ParameterError("--ws serves --mode play, echo or pipeline")
                whost, wport = _host_port(args.ws, "--ws")
                wsfront = MediaStreamServer(agent.iface, mode=agent.mode, speech=args.speech, host=whost, port=wport,
                                            pipeline=agent.pipeline_config.build if agent.mode == "pipeline" else None,
                                            reuse_port=worker is not None)  # fmt: skip
                await wsfront.start()
                print(f"  WebSocket media streams: ws://{whost}:{wsfront.address[1]}/media", flush=True)
            stop = asyncio.Event()
            _stop_on_signals(stop, worker is not None)  # SIGINT/SIGTERM: stop in order (a second one: at once)
            if worker is None:
                print("Ctrl-C stops", flush=True)
            else:  # the parent stops its workers with SIGTERM; Ctrl-C reaches the whole process group
                from .cli_workers import READY_TAG

                print(READY_TAG, flush=True)
            from .agent import tune_gc

            tune_gc()
            stats_task = None
            if args.stats_file:
                path = args.stats_file if worker is None else f"{args.stats_file}.{worker}"
                stats_task = asyncio.ensure_future(_write_vital_signs(agent, path, args.stats_every))
            try:
                await stop.wait()
            finally:
                if stats_task is not None:
                    stats_task.cancel()
        finally:
            if webrtc is not None:
                await webrtc.close()
            if wsfront is not None:
                await wsfront.close()
            await agent.close()
            if worker is not None:
                from .cli_workers import STATS_TAG, worker_stats

                print(STATS_TAG + json.dumps(worker_stats(agent, webrtc, wsfront)), flush=True)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def _stop_on_signals(stop: Any, worker: bool = False) -> None:
    """SIGINT and SIGTERM set ``stop`` (the server then closes its calls, sockets and
    files in order, as for Ctrl-C); the handlers are removed at the first signal, so a
    second one acts at once (KeyboardInterrupt / termination). A ``worker`` (of ``agent
    serve --workers``) ignores SIGINT and stops on its parent's SIGTERM."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM,) if worker else (signal.SIGTERM, signal.SIGINT)

    def on_signal() -> None:
        stop.set()
        for sig in sigs:
            loop.remove_signal_handler(sig)

    for sig in sigs:
        loop.add_signal_handler(sig, on_signal)


async def _write_vital_signs(agent: Any, path: str, every_s: float) -> None:
    """Append ``agent.vital_signs()`` plus the process's memory (``rss_kb``, and the live
    Python memory blocks ``py_blocks``), descriptors and asyncio tasks to ``path`` as one
    JSON line every ``every_s`` seconds (loop time ``t``, s since the first line), with
    the process's CPU time (``cpu_s``), its garbage collections so far and their total
    time (``gc_n``, ``gc_ms``) and ``agent.overload_state()`` (the overload controller's
    inputs and adaptive rate: a trace of the control under load, ``--stats-every 0.1``)."""
    import asyncio
    import gc
    import os
    import time

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # garbage-collector pauses (a measurement of this process, not a protocol clock):
    # collections and their total time per line, so a trace shows a stall that was the GC
    gc_pause = [0.0, 0, 0.0]  # [total s, collections, start of the running one]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_pause[2] = time.perf_counter()
        else:
            gc_pause[0] += time.perf_counter() - gc_pause[2]
            gc_pause[1] += 1

    gc.callbacks.append(_on_gc)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            while True:
                rss_kb = 0
                with open("/proc/self/status", encoding="ascii") as st:
                    for line in st:
                        if line.startswith("VmRSS:"):
                            rss_kb = int(line.split()[1])
                row = {"t": round(loop.time() - t0, 3), "rss_kb": rss_kb, "fds": len(os.listdir("/proc/self/fd")),
                       "tasks": len(asyncio.all_tasks()),
                       # live Python memory blocks: flat while rss_kb grows = fragmentation, not a leak
                       "py_blocks": sys.getallocatedblocks(), "cpu_s": round(time.process_time(), 3),
                       "gc_n": gc_pause[1], "gc_ms": round(1000.0 * gc_pause[0], 1),
                       **agent.vital_signs(), **agent.overload_state()}
                fh.write(json.dumps(row, sort_keys=True) + "\n")
                fh.flush()
                await asyncio.sleep(every_s)
    finally:
        gc.callbacks.remove(_on_gc)


# ------------------------------------------------------------- nat-matrix
def cmd_nat_matrix(args: argparse.Namespace) -> int:
    from .natmatrix import nat_matrix, outcome_label

    def progress(cell: dict) -> None:
        if not args.json:
            print(f"  {cell['method']:<18} {cell['caller_nat']:>21} -> {cell['agent_nat']:<21} "
                  f"{outcome_label(cell['caller_to_agent'], cell['agent_to_caller']):<19} {cell.get('path') or '-'}",
                  flush=True)

    cells = nat_matrix(methods=args.transports, presets=args.presets, seconds=args.seconds, seed=args.seed,
                       on_cell=progress)  # fmt: skip
    if args.json:
        from .sim.engine import _jsonable

        print(json.dumps(_jsonable(cells), sort_keys=True, allow_nan=False))
    return 0


# ---------------------------------------------------------------- metrics
def cmd_metrics(args: argparse.Namespace) -> int:
    from . import audio, metrics

    ref, ref_rate = audio.read_wav(args.reference)
    deg, deg_rate = audio.read_wav(args.degraded)
    if ref_rate not in (8000, 16000, 32000, 44100, 48000, 11025, 22050, 24000):
        raise ParameterError(f"{args.reference}: sample rate {ref_rate} Hz is not supported")
    if deg_rate != ref_rate:
        deg = audio.resample(deg, deg_rate, ref_rate)
    rate = 16000 if ref_rate >= 16000 else 8000
    ref = audio.resample(ref, ref_rate, rate)
    deg = audio.resample(deg, ref_rate, rate)
    r_al, d_al, est = audio.align(ref, deg, rate, max_delay_ms=args.max_delay_ms)
    out: dict[str, Any] = {
        "reference": str(args.reference),
        "degraded": str(args.degraded),
        "sample_rate": rate,
        "delay_ms": est.delay_ms,
        "delay_confidence": est.confidence,
        "reference_level_dbov": audio.active_level_db(ref, rate),
        "degraded_level_dbov": audio.active_level_db(deg, rate),
        "pesq_nb_sample_rate": rate,  # P.862 scores narrowband at 8 or 16 kHz: at the files' rate, as the pesq package does
    }
    warnings = []

    failed: list[VoicelabError] = []

    def score(name: str, fn) -> None:  # one metric failing (even PESQ's C code crashing) keeps the others
        try:
            out[name] = fn()
        except VoicelabError as exc:
            out[name] = None
            failed.append(exc)
            warnings.append(f"{name}: {exc}")

    score("pesq_nb", lambda: metrics.pesq(r_al, d_al, rate, mode="nb"))
    score("pesq_wb", lambda: metrics.pesq(r_al, d_al, rate, mode="wb") if rate >= 16000 else None)
    score("stoi", lambda: metrics.stoi(r_al, d_al, rate))
    score("snr_db", lambda: metrics.snr_db(r_al, d_al))
    if len(failed) == 4 - (rate < 16000):  # nothing could be scored: that is the error
        raise failed[0]
    if est.confidence < 0.3:
        warnings.append(
            f"low confidence ({est.confidence:.2f}) in the delay estimate: are these recordings of the same speech?"
        )
    out["warnings"] = warnings
    if args.json:
        from .sim.engine import _jsonable

        print(json.dumps(_jsonable(out), sort_keys=True, allow_nan=False))
    else:
        _print_table({k: v for k, v in out.items() if k != "warnings"})
        for w in warnings:
            print(f"  note: {w}")
    return 0


# ----------------------------------------------------------------- codecs
def cmd_codecs(args: argparse.Namespace) -> int:
    from . import codecs

    rows = codecs.available()
    if args.json:
        print(json.dumps(rows, sort_keys=True, default=str))
        return 0
    hdr = f"{'name':<8} {'rtpmap':<16} {'PT':>4} {'Hz':>6} {'kbit/s':>7} {'frame ms':>8} {'delay ms':>8}  status"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        pt = "dyn" if r.get("payload_type") is None else str(r["payload_type"])
        status = "ok" if r.get("available", True) else f"unavailable: {r.get('unavailable_reason')}"
        print(
            f"{r['name']:<8} {str(r.get('rtpmap')):<16} {pt:>4} {r.get('sample_rate', 0):>6} "
            f"{r.get('bitrate', 0) / 1000:>7.2f} {r.get('frame_ms', 0):>8g} {r.get('algorithmic_delay_ms', 0):>8.2f}  {status}"
        )
    return 0


# ------------------------------------------------------------------- misc
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    quick = args.quick or os.environ.get("VOICELAB_QUICK") == "1"
    path = run_demo(out_dir=args.out, quick=quick, progress=not args.no_progress, live=not args.no_live)
    print(f"report: {path}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from . import audio

    if args.action == "fetch":
        paths = audio.fetch_corpus(dest=args.dest)
        for p in paths:
            print(p)
        return 0
    items = audio.corpus_items(sample_rate=16000)
    print(f"speech corpus in use: {audio.corpus_source()}  (send one item with --speech corpus:ID)")
    for it in items:
        dur = f"{it.duration_s:6.2f} s" if it.duration_s is not None else "       -"
        print(f"  {it.id:<32} {it.talker:<16} {dur}  {it.location:<13} {it.transcript or ''}")
    if items and not items[0].natural:
        print(f"  note: {audio.SYNTHETIC_WARNING}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sim import Scenario, load_sweep_file, sweep

    spec = load_sweep_file(args.file)
    base = Scenario.from_dict(spec["base"])
    journal = args.journal or spec.get("journal") or str(Path(args.file).with_suffix(".journal.jsonl"))
    output = args.output or spec.get("output")
    if output:  # fail before running anything, not after
        try:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            with open(output, "a"):
                pass
        except OSError as exc:
            raise ParameterError(f"cannot write sweep output {output}: {exc.strerror or exc}") from None
    import warnings

    from .sim.sweep import JournalRepairedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", JournalRepairedWarning)
        df = sweep(base, spec["grid"], repeats=spec.get("repeats") or 1, seed=spec.get("seed") or 0,
                   workers=args.workers if args.workers is not None else (spec.get("workers") or 1), journal=journal)
    for w in caught:  # one line each (the journal repair), not Python's warning format
        print(f"voicelab: note: {w.message}", file=sys.stderr)
    if output:
        if str(output).endswith(".parquet"):
            df.to_parquet(output)
        else:
            df.to_csv(output, index=False)
        print(f"wrote {output} ({len(df)} rows); journal {journal}")
    else:
        print(df.to_csv(index=False))
    return 0


def cmd_sip_parse(args: argparse.Namespace) -> int:
    from .sip import describe

    path = Path(args.file)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    except OSError as exc:
        raise ParameterError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    info = describe(data, datagram=not args.stream)
    if args.json:
        print(json.dumps(info, sort_keys=True))
        return 0
    verdict = "well-formed" if info["valid"] else "MALFORMED"
    what = info.get("method") or (f"{info.get('status_code')} {info.get('reason') or ''}".strip() if info.get("kind") else "?")
    print(f"{args.file}: {verdict} {info.get('kind') or 'message'} {what}")
    if info.get("request_uri"):
        print(f"  request-uri  {info['request_uri']}")
    for name, value in info.get("headers") or []:
        print(f"  {name}: {value}")
    print(f"  body         {info.get('body_length') or 0} bytes")
    if info.get("error"):
        print(f"  error        {info['error']}")
    if info.get("kind") == "request":
        reply = info.get("reply_status")
        print(f"  a UAS would  {'accept it' if reply is None else f'answer {reply}'}")
    return 0


#: agent modes whose steady G.711 calls the native media engine plays (voicelab.rtp.native)
_NATIVE_MODES = ("echo", "play", "record")

_PEERS = [
    ("baresip", "baresip-core", "SIP interop peer"),
    ("sipp", "sip-tester", "SIP load/interop peer"),
    ("chromium", "chromium", "WebRTC browser peer; plotly PNG/SVG export"),
    ("turnserver", "coturn", "TURN server"),
    ("tshark", "tshark", "pcap dissection checks"),
    ("dumpcap", "wireshark-common", "captures of the namespace chain's links (call --path ... --net vnet)"),
    ("ip", "iproute2", "network namespaces (kernel NAT cross-check, root)"),
    ("iptables", "iptables", "kernel NAT rules (kernel NAT cross-check, root)"),
    ("kamailio", "kamailio", "SIP proxy of the real SBC (call --path ...+sbc)"),
    ("rtpengine", "rtpengine-daemon", "media anchor of the real SBC (call --path ...+sbc)"),
]


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import audio, codecs

    rows = []
    for exe, pkg, what in _PEERS:
        rows.append({"tool": exe, "found": shutil.which(exe) is not None, "debian_package": pkg, "for": what})
    g729 = codecs.is_available("g729")
    rows.append({"tool": "bcg729", "found": g729, "debian_package": "libbcg729-0", "for": "G.729 codec"})
    src = audio.corpus_source()
    if args.json:
        print(json.dumps({"tools": rows, "speech_corpus": src, "version": __version__}, sort_keys=True))
        return 0
    print(f"voicelab {__version__}")
    for r in rows:
        mark = "ok " if r["found"] else "-- "
        hint = "" if r["found"] else f"   (apt-get install {r['debian_package']})"
        print(f"  {mark}{r['tool']:<11} {r['for']}{hint}")
    print(f"  speech corpus: {src}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    nb = Path(__file__).resolve().parent.parent / "notebooks"
    exe = shutil.which("jupyter")
    if exe is None:
        raise VoicelabError("JupyterLab is not installed: pip install 'voicelab[lab]'")
    return subprocess.call([exe, "lab", str(nb if nb.exists() else Path.cwd())])


# ------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``voicelab: error: ...``, exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"voicelab: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def _default_workers() -> int:
    from .cli_workers import default_workers

    return default_workers()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="voicelab", description="A lab for real-time voice: codecs, network paths, SIP/WebRTC.")
    p.add_argument("--version", action="version", version=f"voicelab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("simulate", help="one sim-mode call, metrics as JSON", description="Simulate one call offline: codec -> channel -> jitter buffer -> decoder, and measure it.")
    s.add_argument("--codec", default="pcmu", help="codec name (see 'voicelab codecs')")
    s.add_argument("--bitrate", type=int, metavar="BPS", help="codec mode/bitrate in bit/s (e.g. g726 32000, amr-nb 12200, opus 24000)")
    s.add_argument("--frame-ms", type=_float_arg("frame", 2.5, 120.0), metavar="MS", help="packet time")
    s.add_argument("--dtx", action="store_true", help="discontinuous transmission (Opus, AMR)")
    s.add_argument("--fec", action="store_true", help="in-band FEC (Opus): encoder adds it, receiver uses it")
    s.add_argument("--packet-loss-perc", type=int, metavar="PCT", help="Opus expected loss (default: the channel's loss when --fec)")
    s.add_argument("--plc", dest="plc", action="store_true", default=True, help="conceal lost frames (default)")
    s.add_argument("--no-plc", dest="plc", action="store_false", help="insert silence for lost frames")
    s.add_argument("--jitter-buffer", default="fixed:60", metavar="fixed:MS|adaptive|auto", help="jitter buffer (default fixed:60)")
    _add_channel_args(s)
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same result)")
    s.add_argument("--input", metavar="WAV", help="speech to send (default: the speech corpus)")
    s.add_argument("--speech", default="default", help="named speech when no --input: default (natural corpus), espeak, talker:NAME, corpus:ID, corpus:N, harvard, arctic, css")
    s.add_argument("--save-audio", metavar="DIR", help="write reference.wav and degraded.wav there")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_simulate)

    cl = sub.add_parser("call", help="one live call (SIP, WebRTC or WebSocket) between the lab's caller and agent, metrics as JSON",
                        description="Place a real call between the lab's caller and agent (on 127.0.0.1, or on the virtual network) and measure it.")
    cl.add_argument("--transport", default="sip", choices=["sip", "webrtc", "ws"],
                    help="sip: SIP + RTP; webrtc: aiortc peers (ICE, DTLS-SRTP); ws: media streams over a WebSocket")
    cl.add_argument("--net", default="loopback", choices=["loopback", "vnet", "sim"],
                    help="loopback: real sockets on 127.0.0.1; vnet: the in-process virtual network with NATs; "
                         "sim: --agent pipeline offline on the simulated channel's audio")
    g = cl.add_argument_group("SIP")
    g.add_argument("--sip-transport", default="udp", choices=["udp", "tcp", "tls", "ws"], help="SIP signalling transport")
    g.add_argument("--srtp", action="store_true", help="SDES-keyed SRTP (AES_CM_128_HMAC_SHA1_80)")
    g.add_argument("--auth", metavar="USER:PASS", help="the agent challenges with digest auth; the caller answers")
    g.add_argument("--ca-file", metavar="PEM", help="with --target over TLS: the CA that signed the peer's certificate "
                                                    "(e.g. the test CA 'agent serve --transport tls' prints)")
    g = cl.add_argument_group("WebRTC")
    g.add_argument("--bitrate", type=int, metavar="BPS", help="Opus bitrate (lab codec)")
    g.add_argument("--fec", action="store_true", help="Opus in-band FEC")
    g.add_argument("--ice-servers", metavar="JSON", help='RTCIceServer list, e.g. \'[{"urls": "stun:127.0.0.1:3478"}]\' (default none: offline)')
    g.add_argument("--relay-only", action="store_true", help="ICE transport policy relay (needs a TURN server)")
    g.add_argument("--webrtc-mode", default="lab", choices=["lab", "aiortc-defaults"],
                   help="lab codecs and jitter buffers, or plain aiortc (96 kbit/s Opus, its fixed buffer)")
    g = cl.add_argument_group("WebSocket (--transport ws)")
    g.add_argument("--tcp-recovery", default="linux", choices=["linux", "rto"],
                   help="how the TCP relay repairs a loss: like Linux (fast retransmit/RACK, tail loss probe, RTO) "
                        "or only by the retransmission timeout (the lab's first model)")
    g = cl.add_argument_group("virtual network (--net vnet)")
    g.add_argument("--caller-nat", default="open", help="NAT preset in front of the caller")
    g.add_argument("--agent-nat", default="open", help="NAT preset in front of the agent")
    g.add_argument("--method", default="sip-comedia", help="sip, sip-comedia or sip-relay")
    g.add_argument("--virtual-time", action="store_true", help="run on a virtual clock (the lab's own stacks only)")
    cl.add_argument("--codec", default="pcmu", help="codec both sides offer and accept")
    cl.add_argument("--agent", choices=["pipeline", "pipecat"],
                    help="call the listen-think-speak agent (pipeline: the lab's; pipecat: a Pipecat bot, "
                         "--transport ws|webrtc|sip, sip through the lab's media-stream bridge) and measure its turns")  # fmt: skip
    cl.add_argument("--turns", type=int, default=5, metavar="N", help="--agent pipeline|pipecat or --target BOT-URL: utterances to play")
    cl.add_argument("--barge-in-after", type=_float_arg("barge-in-after", 0.05, 10.0), metavar="S",
                    help="--agent pipeline: talk over each reply this long after it starts")
    _pipeline_config_args(cl)
    cl.add_argument("--target", metavar="URI|URL",
                    help="call this SIP URI on loopback (e.g. a softphone) instead of the built-in agent; or a voice bot "
                         "already running (on loopback), by URL: pipecat+ws://HOST:PORT/PATH (Twilio media streams over a "
                         "WebSocket, e.g. a Pipecat bot with TwilioFrameSerializer) or pipecat+webrtc://HOST:PORT/PATH "
                         "(a SmallWebRTC HTTP offer endpoint, e.g. .../api/offer); --turns N conversation measured at the "
                         "caller's ear as with --agent pipecat (the bot's own stages and Pipecat's figure: not reported)")
    cl.add_argument("--path", metavar="SPEC", help="a real-world path: PSTN-PRESET+trunk[+sbc|+relay], e.g. "
                    "pstn-national-mobile+trunk+sbc (phone side simulated hop by hop, live SIP trunk leg, real "
                    "Kamailio + rtpengine SBC; with --net vnet the leg runs in network namespaces, each hop measured, "
                    "impairment flags on the carrier link), or browser+gateway+sip (WebRTC -> the lab's SIP<->WebRTC gateway "
                    "-> SIP agent; --codec opus transcodes, --codec pcmu passes G.711 through), or browser+gateway+PRESET (the "
                    "gateway's SIP leg reaches a phone over the PSTN preset, its hops applied live); prints a per-hop "
                    "delay table and end-to-end PESQ / E-model. With --agent pipeline: turns with the pipeline agent "
                    "over the path (PRESET+trunk or sip on the virtual clock; +sbc / +relay in real time on loopback)")
    cl.add_argument("--duration", type=_float_arg("duration", 1.0, 60.0), default=4.0, metavar="S", help="seconds of speech each way")
    cl.add_argument("--jitter-buffer", default="fixed:60", metavar="fixed:MS|adaptive|auto")
    _add_channel_args(cl)
    cl.add_argument("--input", metavar="WAV", help="speech to send (default: the speech corpus)")
    cl.add_argument("--speech", default="default", help="named speech when no --input")
    cl.add_argument("--seed", type=int, default=None,
                    help="random seed (default 0; with --target, fresh Call-IDs, tags and branches unless given)")
    cl.add_argument("--pcap", metavar="FILE", help="write the call (SIP, RTP, RTCP as the caller sees it) to a pcap file; "
                    "SIP over TCP/TLS/WS is written as plaintext on a synthetic TCP stream")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_call)

    from .cli_run import add_parsers as _add_run_parser  # run SCENARIO.yaml: one trial, its Result

    _add_run_parser(sub)

    ag = sub.add_parser("agent", help="the voice agent, standalone")
    agsub = ag.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", parser_class=_Parser)
    ag.set_defaults(func=lambda _args: (ag.print_help(), 2)[1])
    ags = agsub.add_parser("serve", help="answer SIP (and WebRTC) calls on loopback: echo, play or record",
                           description="A standalone voice agent that softphones, SIPp, browsers and the lab's caller can call.")
    ags.add_argument("--sip", default="127.0.0.1:5060", metavar="HOST:PORT", help="where to listen (loopback only)")
    ags.add_argument("--transport", default="udp", choices=["udp", "tcp", "tls", "ws"], help="SIP transport")
    ags.add_argument("--codecs", default="pcmu,pcma,g722,opus", help="comma-separated, in preference order")
    ags.add_argument("--mode", default="play", metavar="echo|play[:FILE]|record:DIR|signalling[:S]|pipeline",
                     help="echo the caller through the agent's pipeline, play speech, record what arrives, "
                          "signalling only (no media; hang up after S seconds if given), or listen-think-speak "
                          "(VAD, PocketSphinx, responder, eSpeak NG)")
    _pipeline_config_args(ags)
    ags.add_argument("--speech", default="default", help="named speech for --mode play")
    ags.add_argument("--auth", metavar="USER:PASS", help="challenge INVITEs with digest auth")
    ags.add_argument("--auth-algorithms", metavar="LIST", help="digest algorithms offered, e.g. MD5 for older phones (default SHA-256,MD5)")
    ags.add_argument("--srtp", action="store_true", help="require SDES-keyed SRTP")
    ags.add_argument("--max-calls", type=int, default=32,
                     help="concurrent calls over all workers (more get 486 Busy Here; default 32)")
    ags.add_argument("--media-timeout", type=_float_arg("media-timeout", 1.0, 86400.0), default=60.0, metavar="S",
                     help="hang up (BYE) a call after S seconds without RTP/RTCP from the caller (default 60)")
    ags.add_argument("--session-expires", type=int, default=1800, metavar="S",
                     help="RFC 4028 session interval granted to callers that ask for session timers (default 1800)")
    ags.add_argument("--max-rate", type=float, metavar="CALLS_PER_S",
                     help="overload control: new calls admitted per second (more get 503 + Retry-After); default no rate limit")
    ags.add_argument("--max-lag-ms", type=float, default=250.0, metavar="MS",
                     help="overload control: refuse new calls with 503 + Retry-After while the event loop runs this late (default 250)")
    ags.add_argument("--max-queue-delay-ms", type=float, default=200.0, metavar="MS",
                     help="overload control: admit fewer new calls while the waiting messages take longer than this to serve (default 200, below the callers' 500 ms T1; 0: off)")
    ags.add_argument("--max-queue", type=int, default=0, metavar="N",
                     help="overload control: admit fewer new calls while more messages than this wait (default 0: off)")
    ags.add_argument("--no-overload-control", action="store_true",
                     help="take every INVITE up to --max-calls (no 503s; the agent may collapse past its capacity)")
    ags.add_argument("--tick-ms", type=_float_arg("tick-ms", 0.0, 100.0), default=None, metavar="MS",
                     help="media pacer grid: every call's 20 ms media clock starts on a multiple of MS (default 1; "
                          "20 for capacity: one wake-up per frame for all calls, up to 20 ms more playout delay)")
    ags.add_argument("--read-in-tick", action="store_true",
                     help="experimental: read each call's RTP socket in its playout tick instead of on every arrival "
                          "(fewer wake-ups; packet handling waits up to one frame; arrival times stay exact; "
                          "see docs/benchmarks.md 'Reading in the tick')")
    ags.add_argument("--native-media", action=argparse.BooleanOptionalAction, default=True,
                     help="steady G.711 calls in echo, play and record modes are played by a native thread, where it "
                          "is built (Python replays its log and keeps every statistic and recording; see docs/sip.md 'The native media "
                          "engine'); --no-native-media: every slot in Python (default: on)")
    ags.add_argument("--tls-cert", metavar="PEM", help="certificate chain for --transport tls (default: a generated test CA)")
    ags.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    ags.add_argument("--ws", metavar="HOST:PORT", help="also answer media streams over a WebSocket (path /media)")
    ags.add_argument("--webrtc", metavar="HOST:PORT", help="also answer WebRTC callers: signaling server + browser page here")
    ags.add_argument("--workers", default=None, metavar="N|auto",
                     help="agent processes sharing the SIP port (SO_REUSEPORT; a dialog, a TCP/TLS/WS connection and "
                          "a --ws stream stay on one worker). Default auto: one per core this process may use "
                          f"(here {_default_workers()}; os.sched_getaffinity: taskset -c 0 gives 1); --workers 1: "
                          "a single process. "
                          "--max-calls is the total, shared among the workers (fewer calls than workers: that many "
                          "workers); --mode record:DIR: every worker writes into DIR (w<K>-<n>-<call-id>.wav); "
                          "--webrtc HOST:PORT: worker K serves WebRTC on PORT+K-1")
    ags.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    ags.add_argument("--stats-file", metavar="PATH",
                     help="append one JSON line of the agent's vital signs (resident memory, descriptors, asyncio tasks, "
                          "media streams, calls, CPU and garbage-collector time, the overload controller's state) "
                          "every --stats-every s, for soaks and overload traces; with several workers (the default on a "
                          "multi-core machine), PATH.K per worker K")
    ags.add_argument("--stats-every", type=_float_arg("stats-every", 0.1, 3600.0), default=10.0, metavar="S",
                     help="seconds between --stats-file lines (default 10)")
    g = ags.add_argument_group("connection limits (TCP, TLS, WS; see docs/sip.md 'Security and load limits')")
    g.add_argument("--max-connections", type=int, default=512, metavar="N",
                   help="open SIP connections at most; more are refused at once (default 512)")
    g.add_argument("--idle-timeout", type=_float_arg("idle timeout", 1.0, 86400.0), default=300.0, metavar="S",
                   help="close a connection silent this long; keep-alives count (default 300 s)")
    g.add_argument("--header-timeout", type=_float_arg("header timeout", 0.5, 3600.0), default=30.0, metavar="S",
                   help="close a connection whose message stays incomplete this long (default 30 s)")
    ags.set_defaults(func=cmd_agent_serve)

    from .cli_gateway import add_parsers as _add_gateway_parsers  # gateway serve: SIP <-> WebRTC

    _add_gateway_parsers(sub)

    nm = sub.add_parser("nat-matrix", help="NAT traversal matrix: caller NAT x agent NAT x method, on the virtual network",
                        description="Run a call for every pair of NAT presets and every traversal method on the in-process "
                                    "virtual network; report audio each way, media path and setup time per cell.")
    nm.add_argument("--transports", default="sip,sip-comedia,sip-relay,webrtc-stun,webrtc-turn,webrtc-relay-only",
                    metavar="LIST", help="methods, comma-separated")
    nm.add_argument("--presets", default="open,full-cone,restricted-cone,port-restricted-cone,symmetric",
                    metavar="LIST", help="NAT presets on both sides, comma-separated")
    nm.add_argument("--seconds", type=_float_arg("seconds", 0.5, 10.0), default=1.0, help="media per call")
    nm.add_argument("--seed", type=int, default=0)
    nm.add_argument("--json", action="store_true", help="print the cells as one JSON list")
    nm.set_defaults(func=cmd_nat_matrix)

    m = sub.add_parser("metrics", help="score two recordings (PESQ, STOI, delay, level)")
    m.add_argument("reference", help="reference WAV (what was sent)")
    m.add_argument("degraded", help="degraded WAV (what was received)")
    m.add_argument("--max-delay-ms", type=_float_arg("max delay", 1.0, 10000.0), default=1000.0)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_metrics)

    c = sub.add_parser("codecs", help="codecs available here, with their facts")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_codecs)

    d = sub.add_parser("demo", help="the flagship comparison: figures + report under results/demo/")
    d.add_argument("--out", default="results/demo", help="output folder")
    d.add_argument("--quick", action="store_true", help="fewer points and repeats (also VOICELAB_QUICK=1)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--no-live", action="store_true", help="skip the live SIP/WebRTC/WebSocket comparison")
    d.set_defaults(func=cmd_demo)

    ds = sub.add_parser("datasets", help="the speech corpus: list or fetch natural speech")
    ds.add_argument("action", choices=["list", "fetch"])
    ds.add_argument("--dest", help="fetch into this folder instead of the user cache")
    ds.set_defaults(func=cmd_datasets)

    sw = sub.add_parser("sweep", help="run a parameter sweep from a YAML file (resumable)")
    sw.add_argument("file")
    sw.add_argument("--workers", type=int, help="local worker processes")
    sw.add_argument("--journal", help="resume journal (JSON lines)")
    sw.add_argument("--output", help="write the table (.parquet or .csv)")
    sw.set_defaults(func=cmd_sweep)

    from .cli_study import add_parsers as _add_study_parsers  # study run, results ls|show|export

    _add_study_parsers(sub)

    sp = sub.add_parser("sip", help="SIP tools: inspect a message")
    spsub = sp.add_subparsers(dest="sip_command", metavar="SUBCOMMAND", parser_class=_Parser)
    sp.set_defaults(func=lambda _args: (sp.print_help(), 2)[1])
    spp = spsub.add_parser("parse", help="show a SIP message's structure, or its error and the status a UAS answers")
    spp.add_argument("file", help="a file holding one SIP message ('-' for standard input)")
    spp.add_argument("--stream", action="store_true", help="stream framing (TCP/TLS): Content-Length is required")
    spp.add_argument("--json", action="store_true", help="print one JSON object (valid, kind, error, reply_status, ...)")
    spp.set_defaults(func=cmd_sip_parse)

    dr = sub.add_parser("doctor", help="which optional peers and libraries are installed")
    dr.add_argument("--json", action="store_true")
    dr.set_defaults(func=cmd_doctor)

    lb = sub.add_parser("lab", help="open JupyterLab on notebooks/")
    lb.set_defaults(func=cmd_lab)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]  # agent serve --workers hands it to its workers
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VoicelabError as exc:
        print(f"voicelab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("voicelab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
