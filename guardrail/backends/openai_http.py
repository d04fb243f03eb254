"""An OpenAI-compatible server (vLLM, llama.cpp's server, OpenAI itself) over one shared httpx client: the
proxy's hot path, and its pass-through.

One ``POST /chat/completions`` per generation: the request's pass-through fields (tools, response_format,
vendor fields such as vLLM's) and the client's own messages go as they came; the answer's tool calls, refusal
and system fingerprint come back on the Generation.  Output logprobs are asked for only when the request says
so (``GenerationRequest.logprobs``); an answer without them is a Generation whose output has no tokens, which
the Guard judges unscorable (its fail mode), never a score of 0.  Text (a prompt) is scored only where the
server echoes prompt logprobs (``echo_scoring``: vLLM's ``/completions`` with ``echo``, one call per text, the
``score_top_k`` alternatives per token bounding its entropy); elsewhere the embedded scorer screens prompts.
Faults map into guardrail's BackendError tree.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ..errors import (
    BackendBusyError,
    BackendHTTPError,
    BackendTimeoutError,
    BackendUnavailableError,
    InputError,
    UnscorableError,
)
from ..jsonio import loads
from ..types import Generation, LogprobMode, Segment, Side
from .base import BackendBase, Capabilities, GenerationRequest, ScorerInfo, TokenEvent
from .openai_logprobs import Origin, chat_output_segment, echo_segment
from .stream_assembler import StreamAssembler

__all__ = ["OpenAIHTTPBackend"]

_MESSAGE_CORE = ("role", "content")
_RESPONSE_EXTRA = ("system_fingerprint", "service_tier")
_TAIL_READ_S = 0.25  # how long the end of a stream body is read after [DONE] (a server ends it at once)


class OpenAIHTTPBackend(BackendBase):
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 chunk_timeout: float | None = None, client: httpx.AsyncClient | None = None,
                 logprob_mode: LogprobMode = LogprobMode.RAW, tokenizer: str | None = None,
                 max_top_k: int | None = 20, revision: str | None = None, echo_scoring: bool = False,
                 score_top_k: int = 5) -> None:
        """The scorer identity is the served model (and ``revision``, when given), not the server's address: a
        baseline fitted through one address holds through another for the same model.  ``echo_scoring``: the
        server returns prompt logprobs with ``echo`` (vLLM): ``score`` then works, with ``score_top_k``
        alternatives per token (a baseline records that k: its entropies are top-k lower bounds)."""
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, read=chunk_timeout or timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        tok = tokenizer or f"served:{model}"
        self._scorer = ScorerInfo(backend="openai_http", model=model, weights=revision or f"served:{model}",
                                  tokenizer=tok, logprob_mode=logprob_mode, settings={})
        self.echo_scoring, self.score_top_k = echo_scoring, score_top_k
        self._caps = Capabilities(prompt_logprobs=echo_scoring, output_logprobs=True, max_top_k=max_top_k,
                                  logprob_mode=logprob_mode, tokenizer=tok, passthrough=True)
        self._origin = Origin.of(self._scorer)

    @property
    def text_cache_key(self) -> str:
        """The scorer id and the alternatives asked per token (they set the segments' entropy k)."""
        return f"{self._scorer.id}#top_k={self.score_top_k}"

    def _first_choice(self, r: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
        """The body of a completion and its first choice; anything else is a 502 naming what came."""
        try:
            body = loads(r.content)
            choice = body["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendHTTPError(f"{self._where}: not a completion: {r.text[:200]!r}", 502) from None
        return body, choice

    @property
    def _where(self) -> str:
        return f"{self.model} at {self.base_url}"

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment:
        if not self.echo_scoring:
            raise UnscorableError(f"{self._where}: no prompt logprobs through this backend (the embedded scorer "
                                  f"screens prompts; a vLLM server echoes them: echo_scoring)")
        if not isinstance(text, str) or not text:
            raise InputError("text is empty: nothing to score")
        body = {"model": self.model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True,
                "logprobs": self.score_top_k}
        async with self._errors():
            r = await self._client.post(f"{self.base_url}/completions", json=body, headers=self._headers)
            await self._raise_for(r)
        _, choice = self._first_choice(r)
        return echo_segment(choice, text, self._origin, side, self.score_top_k)

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]:
        return [await self.score(t, side=side) for t in texts]

    def _body(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = dict(req.extra)
        body.update(model=self.model, max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p)
        if req.raw_prompt is not None:  # a text completion: the server's own logprobs shape is not asked for
            body["prompt"] = req.raw_prompt
            if stream:
                body.update(stream=True, stream_options={"include_usage": True})
            if req.seed is not None:
                body["seed"] = req.seed
            if req.stop:
                body["stop"] = list(req.stop)
            return body
        body["messages"] = (req.raw_messages if req.raw_messages is not None else
                            [m.model_dump() for m in req.messages])
        if req.seed is not None:
            body["seed"] = req.seed
        if req.stop:
            body["stop"] = list(req.stop)
        if req.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = req.top_logprobs
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as e:
            raise BackendTimeoutError(f"{self._where}: no answer in time ({type(e).__name__})") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise BackendUnavailableError(f"{self._where}: {type(e).__name__}: {e or 'connection lost'}") from None

    async def _raise_for(self, r: httpx.Response) -> None:
        if r.status_code < 400:
            return
        raw = (await r.aread()).decode("utf-8", "replace")
        try:
            msg = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = raw[:240] or r.reason_phrase
        if r.status_code == 429:
            retry = r.headers.get("retry-after", "1")
            raise BackendBusyError(f"{self._where}: {msg}", float(retry) if retry.replace(".", "").isdigit() else 1.0)
        raise BackendHTTPError(f"{self._where}: HTTP {r.status_code}: {' '.join(str(msg).split())[:240]}",
                               r.status_code)

    def _url(self, req: GenerationRequest) -> str:
        return f"{self.base_url}/{'completions' if req.raw_prompt is not None else 'chat/completions'}"

    async def generate(self, request: GenerationRequest) -> Generation:
        async with self._errors():
            r = await self._client.post(self._url(request), json=self._body(request, stream=False),
                                        headers=self._headers)
            await self._raise_for(r)
        body, choice = self._first_choice(r)
        msg = choice.get("message") or ({"content": choice["text"]} if "text" in choice else {})
        text = msg.get("content") or ""
        if request.raw_prompt is not None:
            choice = {**choice, "logprobs": None}  # the legacy logprobs shape is not read here
        try:
            seg = chat_output_segment(choice, self._origin, alternatives=request.alternatives)
        except UnscorableError:
            seg = self._origin.segment(text, Side.OUTPUT, [], None, ["the backend returned no output logprobs"])
        usage = body.get("usage") or {}
        return Generation(
            output=seg, finish_reason=str(choice.get("finish_reason") or "unknown"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage["completion_tokens"]) if usage.get("completion_tokens") is not None else None,
            message_extra={k: v for k, v in msg.items() if k not in _MESSAGE_CORE and v is not None},
            response_extra={k: body[k] for k in _RESPONSE_EXTRA if body.get(k) is not None})

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        asm = StreamAssembler(self._origin, request.max_tokens, alternatives=request.alternatives)
        n_prompt, finish, index = None, None, 0
        raw = request.raw_prompt is not None
        async with self._errors(), self._client.stream(
                "POST", self._url(request), json=self._body(request, stream=True), headers=self._headers) as r:
            await self._raise_for(r)
            lines = sse_data(r.aiter_bytes())
            done = False
            async for data in lines:
                if data == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = loads(data)
                except ValueError:
                    try:  # invalid UTF-8 from the server: read with replacement characters, as a text reader does
                        chunk = loads(data.decode("utf-8", "replace"))
                    except ValueError:
                        raise BackendHTTPError(f"{self._where}: a stream chunk is not JSON: "
                                               f"{data[:120].decode('utf-8', 'replace')!r}", 502) from None
                if chunk.get("error"):
                    raise BackendHTTPError(f"{self._where}: {chunk['error'].get('message', chunk['error'])}", 502)
                usage = chunk.get("usage") or {}
                n_prompt = usage.get("prompt_tokens") or n_prompt
                calls = None if raw else _tool_call_deltas(chunk)
                if request.logprobs and not raw:
                    events = asm.feed(chunk)
                    if calls is not None:  # the chunk's tokens spell a tool call, not content
                        if not events:
                            events = [TokenEvent(index, None, "")]
                        for ev in events:
                            ev.tool_calls = []
                        events[-1].tool_calls = calls
                    for ev in events:
                        finish = ev.finish_reason or finish
                        index = ev.index + 1
                        yield ev
                    continue
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("text") if raw else (choice.get("delta") or {}).get("content")) or ""
                    fr = choice.get("finish_reason")
                    finish = fr or finish
                    if piece:
                        yield TokenEvent(index, None, piece, None if calls else fr)
                        index += 1
                    if calls is not None:  # a tool call's pieces: released as tool_calls, never as content
                        yield TokenEvent(index, None, "", fr, tool_calls=calls)
                        index, calls = index + 1, None
                    elif fr and not piece:
                        yield TokenEvent(index, None, "", fr)
                        index += 1
            if done:  # read on to the body's end: a connection left half read is closed, not reused
                await _drain(lines)
        if request.logprobs and not raw:
            last = asm.finish()
            if last is not None:
                finish = last.finish_reason or finish
                last.prompt_tokens = n_prompt
                yield last
                return
        yield TokenEvent(index, None, "", finish or "unknown", prompt_tokens=n_prompt)


async def _drain(lines: AsyncIterator[bytes]) -> None:
    """Read what a server sends after ``[DONE]`` (the end of the chunked body, which a server sends with it or
    right after), for at most ``_TAIL_READ_S``: then the connection goes back to the pool instead of every stream
    paying a new one.  A server that keeps the body open delays the stream's end by that long (its connection is
    then closed); one that drops the connection there loses nothing (all the content is in)."""
    try:
        async with asyncio.timeout(_TAIL_READ_S):  # entered and left here, in this task: no yield inside
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


async def sse_data(pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payloads of an SSE body's ``data:`` lines, stripped, in order, as bytes (orjson reads them as they
    are).  Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; a line split across reads is joined; other fields, comments
    and blank lines are skipped.  The body's lines are split in C (``bytes.splitlines``) and never decoded to text:
    93 us for a 32-token stream body here where httpx's line reader takes 140."""
    rest: list[bytes] = []  # the pieces of a line not ended yet (a long line is joined once, when it ends)
    async for piece in pieces:
        if not piece:
            continue
        if b"\n" not in piece and b"\r" not in piece:
            rest.append(piece)
            continue
        buf = b"".join((*rest, piece)) if rest else piece
        lines = buf.splitlines()
        rest = [] if buf[-1] in b"\r\n" else [lines.pop()]
        for line in lines:
            if line[:5] == b"data:":
                yield line[5:].strip()
    last = b"".join(rest)
    if last[:5] == b"data:":
        yield last[5:].strip()


def _tool_call_deltas(chunk: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The ``delta.tool_calls`` entries of a stream chunk's first choice, as they came; None without."""
    for choice in chunk.get("choices") or ():
        if (choice.get("index") or 0) == 0:
            calls = (choice.get("delta") or {}).get("tool_calls")
            return list(calls) if calls else None
    return None
