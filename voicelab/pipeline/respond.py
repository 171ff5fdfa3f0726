"""The agent's answer: a deterministic scripted responder with a modelled language-model
latency, and a client for a real OpenAI-compatible streaming chat endpoint.

Both give a :class:`ReplyStream`: tokens stamped with the loop time at which they are
(or, for the model, would be) available. The pipeline polls it with ``now``.

Latency model (:class:`LlmLatencyModel`), **modelled, not measured**: time to first token
log-normal with median ``ttft_median_s`` and log-sd ``ttft_sigma``, then tokens at
``tokens_per_s``. Defaults: median 400 ms (the LLM share of the 1 s voice-agent budget in
Vapi's playbook, https://vapi.ai/playbook/building-integrating: "LLM inference takes
400ms"), sigma 0.35 (p95 ~ 0.7 s), 80 tokens/s (an assumption in the range of hosted
small models). A heavier tail seen in production, p50 566 ms / p95 2246 ms
(https://altersquare.io/?p=12917), is ``LlmLatencyModel(0.566, 0.84)``. Every result
that uses the model says ``llm_modelled: true``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["LlmLatencyModel", "ReplyStream", "ScriptedResponder", "OpenAIChatResponder", "SCRIPT",
           "FALLBACK_EMPTY", "FALLBACK_ERROR", "make_responder"]  # fmt: skip

#: Replies keyed on a word of what was recognised (first match wins), and the default.
SCRIPT: tuple[tuple[str, str], ...] = (
    ("hello", "Hello, thanks for calling. How can I help you today?"),
    ("author", "That sounds like a good book. Shall I look it up for you?"),
    ("trail", "That sounds like a good book. Shall I look it up for you?"),
    ("hands", "A handshake, I see. Is there anything else you need?"),
    ("glad", "I am glad to hear from you too. What can I do for you?"),
    ("forget", "I will not forget it, I promise. Anything else?"),
    ("bless", "Thank you, that is kind of you. What else can I do?"),
    ("", "I see, thank you. Could you tell me a little more about that?"),
)
FALLBACK_EMPTY = "Sorry, I did not catch that. Could you say it again?"
FALLBACK_ERROR = "Sorry, I am having trouble right now. Please hold on."


@dataclass
class LlmLatencyModel:
    """Modelled LLM timing (see the module docstring for the sources of the defaults).

    Parameters
    ----------
    ttft_median_s : float
        Median time to first token, s.
    ttft_sigma : float
        Log-normal shape (0: always the median).
    tokens_per_s : float
        Output speed after the first token.
    """

    ttft_median_s: float = 0.4
    ttft_sigma: float = 0.35
    tokens_per_s: float = 80.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.ttft_median_s) <= 30.0:
            raise ParameterError(f"ttft_median_s must be in 0..30 s, got {self.ttft_median_s!r}")
        if not 0.0 <= float(self.ttft_sigma) <= 3.0:
            raise ParameterError(f"ttft_sigma must be in 0..3, got {self.ttft_sigma!r}")
        if not 1.0 <= float(self.tokens_per_s) <= 10000.0:
            raise ParameterError(f"tokens_per_s must be in 1..10000, got {self.tokens_per_s!r}")

    def ttft(self, rng: np.random.Generator) -> float:
        return float(self.ttft_median_s * np.exp(self.ttft_sigma * rng.standard_normal()))

    def describe(self) -> dict[str, float]:
        return {"ttft_median_s": self.ttft_median_s, "ttft_sigma": self.ttft_sigma, "tokens_per_s": self.tokens_per_s}


@dataclass
class ReplyStream:
    """Tokens of one reply as they become available.

    Attributes
    ----------
    tokens : list of (float, str)
        (loop time available, text piece) in order.
    done_at : float or None
        When the last token is available (None: still streaming).
    error : str or None
        Why the reply failed (refused, timed out, bad response); the pipeline then says
        :data:`FALLBACK_ERROR`.
    modelled : bool
        The timing is the latency model's, not a real model's.
    """

    tokens: list[tuple[float, str]] = field(default_factory=list)
    done_at: float | None = None
    error: str | None = None
    modelled: bool = True
    task: Any = None

    def available(self, now: float) -> list[tuple[float, str]]:
        return [t for t in self.tokens if t[0] <= now + 1e-9]

    def finished(self, now: float) -> bool:
        return self.error is not None or (self.done_at is not None and self.done_at <= now + 1e-9)

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


def _tokens(text: str) -> list[str]:
    """Word-ish pieces with their following space (a stand-in for BPE tokens)."""
    return re.findall(r"\S+\s*", text)


class ScriptedResponder:
    """Deterministic replies keyed on the recognised words, timed by :class:`LlmLatencyModel`.

    Parameters
    ----------
    latency : LlmLatencyModel, optional
    seed : int
        Seeds the latency draws (same seed, same turn order: same times).
    script : sequence of (keyword, reply), optional
    """

    modelled = True
    name = "scripted"

    def __init__(self, latency: LlmLatencyModel | None = None, *, seed: int = 0,
                 script: tuple[tuple[str, str], ...] = SCRIPT) -> None:  # fmt: skip
        self.latency = latency or LlmLatencyModel()
        self.rng = np.random.default_rng(seed)
        self.script = script

    def reply_text(self, text: str) -> str:
        words = set(text.lower().split())
        for key, reply in self.script:
            if key == "" or key in words:
                return reply
        return self.script[-1][1]

    def respond(self, text: str, now: float) -> ReplyStream:
        reply = self.reply_text(text) if text.strip() else FALLBACK_EMPTY
        t = now + self.latency.ttft(self.rng)
        out = ReplyStream(modelled=True)
        for i, tok in enumerate(_tokens(reply)):
            out.tokens.append((t + i / self.latency.tokens_per_s, tok))
        out.done_at = out.tokens[-1][0]
        return out

    def describe(self) -> dict[str, Any]:
        return {"responder": self.name, "llm_modelled": True, **self.latency.describe()}


class OpenAIChatResponder:
    """Streams a reply from an OpenAI-compatible ``/v1/chat/completions`` endpoint (SSE).

    Parameters
    ----------
    url : str
        Base URL (``http://host:port/v1``) or the full ``.../chat/completions`` URL.
    model : str
    timeout_s : float
        No first token within this, or a stall of this long between chunks: the reply
        fails with ``error`` "timeout".
    api_key : str, optional
        Sent as a bearer token when given (never read from the environment here).
    """

    modelled = False
    name = "openai"

    def __init__(self, url: str, *, model: str = "gpt-4o-mini", timeout_s: float = 5.0, api_key: str | None = None,
                 system: str = "You are a helpful phone agent. Answer in one or two short sentences.") -> None:  # fmt: skip
        if not isinstance(url, str) or not re.match(r"^https?://", url):
            raise ParameterError(f"llm url must be an http(s) URL, got {url!r}")
        self.url = url if url.rstrip("/").endswith("chat/completions") else url.rstrip("/") + "/chat/completions"
        if not 0.05 <= float(timeout_s) <= 120:
            raise ParameterError(f"llm timeout must be 0.05..120 s, got {timeout_s!r}")
        self.model, self.timeout_s, self.api_key, self.system = model, float(timeout_s), api_key, system

    def respond(self, text: str, now: float) -> ReplyStream:
        out = ReplyStream(modelled=False)
        if not text.strip():
            out.tokens = [(now, tok) for tok in _tokens(FALLBACK_EMPTY)]
            out.done_at = now
            return out
        out.task = asyncio.get_running_loop().create_task(self._stream(text, out))
        return out

    async def _stream(self, text: str, out: ReplyStream) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        body = {"model": self.model, "stream": True,
                "messages": [{"role": "system", "content": self.system}, {"role": "user", "content": text}]}  # fmt: skip
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=self.timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(self.url, json=body, headers=headers) as resp:
                    if resp.status != 200:
                        out.error = f"llm endpoint answered HTTP {resp.status}"
                        return
                    async for raw in resp.content:
                        line = raw.decode("utf-8", "replace").strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        try:
                            delta = json.loads(data)["choices"][0].get("delta", {}).get("content") or ""
                        except (ValueError, KeyError, IndexError, TypeError):
                            out.error = "llm endpoint sent a malformed stream chunk"
                            return
                        if delta:
                            out.tokens.append((loop.time(), delta))
            if not out.tokens:
                out.error = "llm endpoint returned no tokens"
            else:
                out.done_at = loop.time()
        except asyncio.TimeoutError:
            out.error = f"llm timeout: nothing for {self.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            out.error = f"llm endpoint refused or failed: {type(exc).__name__}: {exc}"[:200]
        except OSError as exc:
            out.error = f"llm endpoint refused or failed: {exc}"[:200]

    def describe(self) -> dict[str, Any]:
        return {"responder": self.name, "llm_modelled": False, "llm_url": self.url, "llm_model": self.model}


def make_responder(llm: str | None = None, *, seed: int = 0, latency: LlmLatencyModel | None = None,
                   timeout_s: float = 5.0) -> Any:  # fmt: skip
    """``None``/``"model"``/``"scripted"``: the scripted responder; an http(s) URL: the chat client."""
    if llm is None or llm in ("model", "scripted"):
        return ScriptedResponder(latency, seed=seed)
    if isinstance(llm, str) and re.match(r"^https?://", llm):
        return OpenAIChatResponder(llm, timeout_s=timeout_s)
    raise ParameterError(f"llm must be 'model' (the scripted responder with modelled latency) or an http(s) URL, got {llm!r}")
