"""What the proxy sends back: the Guard's completion with the report under ``guardrail``, the client's own
logprobs when it asked for them (trimmed to its ``top_logprobs``; never the ones the guard needed for itself),
and the same as server-sent events for ``stream: true``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..guard.result import GuardResult
from ..types import Flag, Token

__all__ = ["completion_body", "logprobs_content", "sse_chunks"]


def _lp(x: float | None) -> float:
    return -9999.0 if x is None else float(x)  # OpenAI's own clamp for a value it has not got


def logprobs_content(tokens: Sequence[Token], top: int) -> list[dict[str, Any]]:
    """OpenAI ``choices[0].logprobs.content`` from delivered tokens (end-of-turn tokens left out)."""
    out = []
    for t in tokens:
        if Flag.SPECIAL in t.flags:
            continue
        out.append({"token": t.text, "logprob": _lp(t.logprob), "bytes": list(t.bytes),
                    "top_logprobs": [{"token": a.token, "logprob": _lp(a.logprob),
                                      "bytes": list(a.token.encode("utf-8"))} for a in t.top[:top]]})
    return out


def completion_body(res: GuardResult, *, model: str, logprobs: bool, top_logprobs: int) -> dict[str, Any]:
    comp = dict(res.completion or {})
    comp["model"] = model
    if logprobs and res.generation is not None and comp.get("choices"):
        choice = dict(comp["choices"][0])
        choice["logprobs"] = {"content": logprobs_content(res.generation.output.tokens, top_logprobs),
                              "refusal": None}
        comp["choices"] = [choice]
    comp["guardrail"] = res.report.model_dump(mode="json")
    return comp


def _pieces(res: GuardResult, text: str) -> Iterator[str]:
    gen = res.generation
    if gen is not None and gen.output.text == text and gen.output.tokens:
        pieces = [text[t.start:t.end] for t in gen.output.tokens if t.end > t.start]
        if "".join(pieces) == text:  # offsets cover the text exactly: one event per token
            yield from pieces
            return
    for i in range(0, len(text), 16):
        yield text[i:i + 16]


def sse_chunks(res: GuardResult, *, model: str, include_usage: bool, logprobs: bool,
               top_logprobs: int) -> Iterator[bytes]:
    """The delivered completion as chat.completion.chunk events: role, the content piece by piece (one per
    token where the tokens are at hand), the finish reason, then one last chunk with no choices carrying the
    usage (when asked) and the report, then ``[DONE]``."""
    comp = res.completion or {}
    cid, created = comp.get("id", f"chatcmpl-{res.report.request_id}"), comp.get("created", int(time.time()))
    choice = (comp.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    finish = choice.get("finish_reason") or "stop"
    lps = (logprobs_content(res.generation.output.tokens, top_logprobs) if logprobs and res.generation is not None
           else None)

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, lp: Any = None, **extra: Any) -> bytes:
        body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                "choices": [{"index": 0, "delta": delta, "logprobs": lp,
                                             "finish_reason": finish_reason}]}
        body.update(extra)
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    pieces = list(_pieces(res, text))
    aligned = lps is not None and len(lps) == len(pieces)
    for i, piece in enumerate(pieces):
        yield chunk({"content": piece}, lp={"content": [lps[i]], "refusal": None} if aligned else None)
    if lps is not None and not aligned and lps:
        yield chunk({}, lp={"content": lps, "refusal": None})
    yield chunk({}, finish)
    last: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": []}
    if include_usage:
        last["usage"] = res.report.usage.model_dump()
    last["guardrail"] = res.report.model_dump(mode="json")
    yield b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
