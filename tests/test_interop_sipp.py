"""Interop with SIPp (Debian sip-tester): SIPp's built-in UAC scenario calls our agent.

SIPp sends INVITE with an SDP offer (PCMU), expects 100/180 (optional) and 200, sends ACK,
pauses, sends BYE and expects 200. Its exit status is 0 only when every call succeeded.
Skipped locally without sipp; required in CI.
"""

from __future__ import annotations

import asyncio

import pytest

from voicelab.calls import Agent

from .conftest import need_tool


async def _run_sipp(sipp: str, calls: int, tmp_path):
    async with Agent(codecs=["pcmu"], speech="harvard") as agent:
        host, port = agent.address
        proc = await asyncio.create_subprocess_exec(
            sipp, f"{host}:{port}", "-sn", "uac", "-m", str(calls), "-l", "1", "-r", "5",
            "-i", "127.0.0.1", "-p", "0", "-d", "500", "-timeout", "30s", "-timeout_error", "-nostdin",
            "-trace_err", "-error_file", str(tmp_path / "sipp_errors.log"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=str(tmp_path),
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        return proc.returncode, out.decode(errors="replace"), agent.calls_answered, agent.calls_ended


@pytest.mark.slow
def test_sipp_uac_calls_our_agent(tmp_path):
    sipp = need_tool("sipp", "sip-tester")
    rc, out, answered, ended = asyncio.run(_run_sipp(sipp, 3, tmp_path))
    errors = (tmp_path / "sipp_errors.log").read_text() if (tmp_path / "sipp_errors.log").exists() else ""
    assert rc == 0, f"sipp exit {rc}\n{out[-2000:]}\n{errors[-2000:]}"
    assert answered == 3 and ended == 3
