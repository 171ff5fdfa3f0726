"""``voicelab gateway serve`` (SIP <-> WebRTC) and ``voicelab bridge serve`` (SIP -> media-stream WebSocket), standalone."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parsers"]


def cmd_gateway_serve(args: argparse.Namespace) -> int:
    import asyncio
    import gc

    from .cli import _host_port
    from .gateway import Gateway

    host, port = _host_port(args.webrtc, "--webrtc")
    codecs = tuple(c.strip().lower() for c in args.codecs.split(",") if c.strip())
    gw = Gateway(target=args.target, sip_codec=args.sip_codec, webrtc_codecs=codecs, jitter_buffer=args.jitter_buffer,
                 max_calls=args.max_calls, passthrough=not args.no_passthrough)

    async def run() -> None:
        await gw.start(host=host, port=port)
        try:
            mode = "transcoding only" if args.no_passthrough else "pass-through when both legs share a codec"
            print(f"voicelab gateway: {gw.front.url} (WebRTC: {','.join(codecs)}) -> {args.target} "
                  f"(SIP: {args.sip_codec}), {mode}", flush=True)
            print("Ctrl-C stops", flush=True)
            gc.freeze()  # start-up objects leave the collector: no long full collections mid-call
            await asyncio.Event().wait()
        finally:
            await gw.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def cmd_bridge_serve(args: argparse.Namespace) -> int:
    import asyncio
    import gc

    from .cli import _host_port
    from .wsbridge import MediaStreamBridge

    host, port = _host_port(args.sip, "--sip")
    codecs = [c.strip().lower() for c in args.codecs.split(",") if c.strip()]
    br = MediaStreamBridge(args.ws_url, host=host, port=port, codecs=codecs, jitter_buffer=args.jitter_buffer,
                           ws_jitter_buffer=args.jitter_buffer, max_calls=args.max_calls)  # fmt: skip

    async def run() -> None:
        await br.start()
        try:
            print(f"voicelab bridge: SIP {br.uri} ({','.join(codecs)}) -> media streams at {args.ws_url}", flush=True)
            print("Ctrl-C stops", flush=True)
            gc.freeze()
            await asyncio.Event().wait()
        finally:
            await br.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``gateway serve`` and ``bridge serve`` to the top-level subparsers."""
    from .cli import _Parser

    gw = sub.add_parser("gateway", help="the SIP <-> WebRTC gateway (B2BUA), standalone")
    gsub = gw.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND", parser_class=_Parser)
    gw.set_defaults(func=lambda _args: (gw.print_help(), 2)[1])
    s = gsub.add_parser("serve", help="answer WebRTC callers and bridge each to a SIP URI",
                        description="Browsers call the page at --webrtc; every call is bridged to --target over SIP "
                                    "(Opus <-> G.711/G.722 transcoding per frame, or payloads passed through when "
                                    "both legs share a codec).")
    s.add_argument("--target", required=True, metavar="SIP-URI", help="where every call goes, e.g. sip:agent@127.0.0.1:5060")
    s.add_argument("--webrtc", default="127.0.0.1:8080", metavar="HOST:PORT", help="signaling server + browser page")
    s.add_argument("--sip-codec", default="pcmu", help="codec offered on the SIP leg (pcmu, pcma, g722)")
    s.add_argument("--codecs", default="opus,pcmu", help="codecs the WebRTC leg accepts, comma-separated")
    s.add_argument("--jitter-buffer", default="fixed:40", metavar="fixed:MS|adaptive|auto", help="the gateway's buffer on both legs")
    s.add_argument("--max-calls", type=int, default=16)
    s.add_argument("--no-passthrough", action="store_true", help="always transcode, even when both legs share a codec")
    s.set_defaults(func=cmd_gateway_serve)

    br = sub.add_parser("bridge", help="the SIP -> media-stream WebSocket bridge (a telephony platform), standalone")
    bsub = br.add_subparsers(dest="bridge_command", metavar="SUBCOMMAND", parser_class=_Parser)
    br.set_defaults(func=lambda _args: (br.print_help(), 2)[1])
    b = bsub.add_parser("serve", help="answer SIP calls and stream each to a Twilio-protocol WebSocket agent",
                        description="A SIP UAS answers (G.711) and streams every call's audio to --ws-url as media "
                                    "streams messages (Twilio Media Streams), playing back what the agent streams; "
                                    "e.g. in front of a Pipecat bot with its Twilio serializer.")
    b.add_argument("--sip", default="127.0.0.1:5060", metavar="HOST:PORT", help="where the SIP UAS listens (UDP)")
    b.add_argument("--ws-url", required=True, metavar="URL", help="the agent's WebSocket, e.g. ws://127.0.0.1:8765/media")
    b.add_argument("--codecs", default="pcmu,pcma", help="codecs the SIP leg accepts (pcmu, pcma)")
    b.add_argument("--jitter-buffer", default="fixed:40", metavar="fixed:MS|adaptive", help="the bridge's buffer on both legs")
    b.add_argument("--max-calls", type=int, default=16)
    b.set_defaults(func=cmd_bridge_serve)
