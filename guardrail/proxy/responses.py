"""What the proxy sends back: the Guard's completion with the report under ``guardrail``, the client's own
logprobs when it asked for them (trimmed to its ``top_logprobs``; never the ones the guard needed for itself),
and the same as server-sent events for ``stream: true``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..guard.result import GuardResult
from ..jsonio import dumps
from ..types import Flag, Token

__all__ = ["TextChunks", "completion_body", "legacy_logprobs", "logprobs_content", "sse_chunks", "text_completion"]


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


def sse_chunks(res: GuardResult, *, model: str, include_usage: bool, text: bool = False) -> Iterator[bytes]:
    """A completion decided before anything streamed (a refusal, a held answer) as SSE: one chunk with the
    content, the finish chunk, one chunk without choices carrying the usage (when asked) and the report,
    ``[DONE]``.  ``text``: shaped as ``/v1/completions`` chunks."""
    comp = res.completion or {}
    cid, created = comp.get("id", f"chatcmpl-{res.report.request_id}"), comp.get("created", int(time.time()))
    choice = (comp.get("choices") or [{}])[0]
    content = (choice.get("message") or {}).get("content") or ""
    shape = TextChunks() if text else (lambda c: c)

    def data(body: dict[str, Any]) -> bytes:
        return b"data: " + dumps(shape(body)) + b"\n\n"

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    yield data(chunk({"role": "assistant", "content": content}))
    yield data(chunk({}, choice.get("finish_reason") or "stop"))
    last: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": []}
    if include_usage:
        last["usage"] = res.report.usage.model_dump()
    last["guardrail"] = res.report.model_dump(mode="json")
    yield data(last)
    yield b"data: [DONE]\n\n"


def legacy_logprobs(lp: dict[str, Any] | None, offset: int = 0) -> tuple[dict[str, Any] | None, int]:
    """Chat logprobs (``{"content": [...]}``) in the ``/v1/completions`` shape -- ``tokens``, ``token_logprobs``,
    ``top_logprobs`` (token -> logprob), ``text_offset`` (into the completion's text, as vLLM counts it, from
    ``offset``) -- and the offset after them."""
    if not lp or lp.get("content") is None:
        return None, offset
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in lp["content"]:
        out["tokens"].append(e["token"])
        out["token_logprobs"].append(e["logprob"])
        out["top_logprobs"].append({a["token"]: a["logprob"] for a in e["top_logprobs"]})
        out["text_offset"].append(offset)
        offset += len(e["token"])
    return out, offset


def text_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion body as ``/v1/completions`` answers (``text_completion``: the text in ``choices[].text``)."""
    out = {**body, "object": "text_completion", "id": str(body.get("id", "")).replace("chatcmpl-", "cmpl-", 1)}
    out["choices"] = [{"index": c.get("index", 0), "text": (c.get("message") or {}).get("content") or "",
                       "logprobs": legacy_logprobs(c.get("logprobs"))[0], "finish_reason": c.get("finish_reason")}
                      for c in body.get("choices", [])]
    return out


class TextChunks:
    """``chat.completion.chunk`` dicts as streamed ``text_completion`` chunks; the logprobs' text offsets run on
    over the stream."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, chunk: dict[str, Any]) -> dict[str, Any]:
        out = {**chunk, "object": "text_completion", "id": str(chunk.get("id", "")).replace("chatcmpl-", "cmpl-", 1)}
        choices = []
        for c in chunk.get("choices", []):
            lp, self.offset = legacy_logprobs(c.get("logprobs"), self.offset)
            choices.append({"index": c.get("index", 0), "text": (c.get("delta") or {}).get("content") or "",
                            "logprobs": lp, "finish_reason": c.get("finish_reason")})
        out["choices"] = choices
        return out
