"""``voicelab run SCENARIO.yaml``: one trial of any mode and transport, its Result.

The scenario file holds :class:`voicelab.experiments.Scenario` fields (a top-level
``scenario:`` key is accepted, so a study's base scenario can be run alone)::

    mode: vnet
    transport: sip
    virtual_time: true
    caller_nat: symmetric
    method: sip-relay
    channel: {loss_rate: 0.02, jitter_ms: 20}
    seconds: 4
    seed: 5

``--set FIELD=VALUE`` changes a field (dotted names as :meth:`Scenario.with_`:
``--set uplink.loss_rate=0.05``; VALUE is read as YAML, so ``true``/``3``/``0.5`` are typed).
``--json`` prints :meth:`voicelab.experiments.Result.to_json` (one line).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import ParameterError

__all__ = ["add_parsers", "cmd_run"]


def _override(text: str) -> tuple[str, Any]:
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE (e.g. uplink.loss_rate=0.05), got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return name.strip(), value


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import Scenario, run
    from .experiments.result import DIRECTIONS

    if args.scenario == "-":
        scn = Scenario.from_yaml(sys.stdin.read())
    else:
        if not args.scenario.endswith((".yaml", ".yml")):
            raise ParameterError(f"scenario file must be .yaml or .yml, got {args.scenario!r}")
        scn = Scenario.from_yaml(args.scenario)
    if args.set:
        scn = scn.with_(**dict(args.set))
    res = run(scn, quality=not args.no_quality)
    if args.json:
        print(res.to_json())
        return 0
    what = f"{scn.mode} {scn.transport}" + (f" ({scn.method})" if scn.method else "")
    if scn.path:
        what = f"{scn.mode} path {scn.path}"
    print(f"voicelab run: {what}, {scn.codec}, {scn.seconds:g} s, seed {scn.seed}, key {scn.key()}"
          f"{'' if res.deterministic else '  [live: numbers vary from run to run]'}")
    call = {k: v for k, v in res.call.items() if v is not None}
    width = max((len(k) for k in call), default=0)
    for k, v in call.items():
        print(f"  {k:<{width}}  {_fmt(v)}")
    metrics = [k for k in res.directions[DIRECTIONS[0]]
               if k != "hops" and any(res.directions[d][k] is not None for d in DIRECTIONS)]
    width = max((len(k) for k in metrics), default=0)
    print(f"  {'':<{width}}  {'caller->agent':>14}  {'agent->caller':>14}")
    for k in metrics:
        a, b = (res.directions[d][k] for d in DIRECTIONS)
        print(f"  {k:<{width}}  {_fmt(a):>14}  {_fmt(b):>14}")
    for d in DIRECTIONS:  # a path's per-hop tables
        hops = res.directions[d].get("hops")
        if hops:
            print(f"  hops {d.replace('_to_', '->')}:")
            for h in hops:
                v = h.get("delay_ms")
                print(f"    {'-' if v is None else f'{v:7.2f}'} ms  {h.get('how', ''):<18}  {h.get('hop')}")
    sp = res.speech
    print(f"  speech: {sp.get('name')} ({'synthetic' if sp.get('synthetic') else 'natural'}, {sp.get('source')})")
    for w in res.warnings:
        print(f"  note: {w}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``run`` to the ``voicelab`` sub-command parsers."""
    r = sub.add_parser(
        "run", help="one trial of any mode/transport from a scenario YAML file, its Result",
        description="Run one voicelab.experiments.Scenario (sim, loopback sip/webrtc/ws, vnet sip/webrtc) "
                    "and print its Result (per direction: delay, PESQ, loss, ...).")
    r.add_argument("scenario", metavar="SCENARIO.yaml", help="scenario fields as YAML ('-' reads standard input)")
    r.add_argument("--set", action="append", type=_override, metavar="FIELD=VALUE",
                   help="change a field (repeatable; dotted names: uplink.loss_rate=0.05, codec_params.bitrate=16000)")
    r.add_argument("--json", action="store_true", help="print the Result as one line of JSON")
    r.add_argument("--no-quality", action="store_true", help="skip PESQ/STOI (faster)")
    r.set_defaults(func=cmd_run)
