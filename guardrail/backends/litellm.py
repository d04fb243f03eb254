"""Backends reachable through litellm: vLLM's OpenAI server, any OpenAI-compatible server, hosted APIs.

* ``hosted_vllm/<served name>`` + ``api_base`` (…/v1): output logprobs with top alternatives; prompt
  scoring through vLLM's extras sent in ``extra_body`` (never ``drop_params``, which silently drops
  logprobs): raw text by completions ``echo`` (``max_tokens=1``, the generated token is dropped), a chat
  prompt by ``prompt_logprobs`` with the template tokens flagged ``special``.
* ``openai/<name>`` + ``api_base`` (llama-cpp-python's server, others) and hosted APIs: output logprobs only.
  ``score()`` then needs a separate ``scorer`` backend (the embedded model, a vLLM server); without one it
  raises :class:`~guardrail.errors.UnscorableError` -- never a made-up score.  llama.cpp's ``echo`` logprobs
  are wrong in 0.3.x, so they are never used.

Foreign errors (litellm, openai, httpx, aiohttp) are mapped at this edge into the BackendError subtree by
:func:`map_backend_errors`, most specific first.  No retries: a fault is reported, not hidden.  Weights are not
readable through an API, so the scorer id carries the served model name (or a revision you pass).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
    GuardrailError,
    InputError,
    LogprobLimitError,
    UnscorableError,
)
from ..types import Generation, LogprobMode, Segment, Side
from .base import Backend, BackendBase, Capabilities, GenerationRequest, ScorerInfo, TokenEvent
from .deadline import ChunkDeadline
from .openai_logprobs import Origin, chat_output_segment, echo_segment, prompt_segment
from .stream_assembler import StreamAssembler

__all__ = ["LiteLLMBackend", "map_backend_errors"]

_LIMIT = re.compile(r"logprobs .*(greater than|exceed|more than|max(imum)? allowed)", re.IGNORECASE)


def _one_line(text: object, limit: int = 240) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status"):
        v = getattr(exc, attr, None)
        if isinstance(v, int):
            return v
    resp = getattr(exc, "response", None)
    v = getattr(resp, "status_code", None)
    return v if isinstance(v, int) else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes: litellm wraps a refused connection as an HTTP 500 whose cause says so."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < 16:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _classify(exc: BaseException, where: str) -> GuardrailError | None:
    """A foreign exception -> our error, most specific first; None when it is not a backend fault."""
    import httpx
    import litellm
    import openai

    if isinstance(exc, GuardrailError):
        return exc
    msg = _one_line(getattr(exc, "message", None) or exc or type(exc).__name__)
    timeouts = (litellm.Timeout, openai.APITimeoutError, httpx.TimeoutException, TimeoutError)
    conn: tuple[type[BaseException], ...] = (
        litellm.APIConnectionError, openai.APIConnectionError, httpx.TransportError, ConnectionError,
    )
    try:
        import aiohttp

        conn = (*conn, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    except ImportError:  # pragma: no cover - aiohttp comes with litellm
        pass
    # the cause decides over the wrapper's status: litellm reports both of these as HTTP 500
    for cause in _chain(exc):
        if isinstance(cause, timeouts):
            return BackendTimeoutError(f"{where}: timed out ({msg})")
        if isinstance(cause, conn):
            return BackendUnavailableError(f"{where}: connection failed ({msg})")
    status = _status(exc)
    if status is not None and status >= 400:
        if status == 400 and _LIMIT.search(msg):
            return LogprobLimitError(f"{where}: too many logprobs asked for ({msg})", status)
        return BackendHTTPError(f"{where}: HTTP {status} ({msg})", status)
    if isinstance(exc, litellm.exceptions.APIError | openai.APIError | httpx.HTTPError):
        return BackendError(f"{where}: {msg}")
    return None


@contextmanager
def map_backend_errors(where: str) -> Iterator[None]:
    """Re-raise litellm / openai / httpx / aiohttp errors as the BackendError subtree (one-line messages)."""
    try:
        yield
    except (GuardrailError, asyncio.CancelledError):
        raise
    except Exception as exc:  # mapped, or re-raised untouched when it is not a backend fault
        mapped = _classify(exc, where)
        if mapped is None:
            raise
        raise mapped from exc


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    return obj.model_dump()


class LiteLLMBackend(BackendBase):
    """One model behind litellm.  ``model`` is litellm's ``provider/name`` (``hosted_vllm/x``, ``openai/x``)."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        chunk_timeout: float | None = None,
        top_k: int = 5,
        max_top_k: int | None = 20,
        logprob_mode: LogprobMode | None = None,
        tokenizer: str | None = None,
        revision: str | None = None,
        scorer: Backend | None = None,
        concurrency: int = 4,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        provider, _, name = model.partition("/")
        if not name:
            provider, name = "openai", model
        if not 1 <= top_k <= 20:
            raise ConfigError(f"top_k must be in 1..20, got {top_k}")
        if timeout <= 0 or (chunk_timeout is not None and chunk_timeout <= 0):
            raise ConfigError("timeouts must be positive")
        if provider == "hosted_vllm" and not api_base:
            raise ConfigError("hosted_vllm needs api_base (the server's …/v1 URL)")
        self.model = model
        self.provider = provider
        self.api_base = api_base
        self.api_key = api_key or "none"
        self.timeout = timeout
        self.chunk_timeout = chunk_timeout or timeout
        self.top_k = top_k
        self._extra = dict(extra_body or {})
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._scorer_backend = scorer
        vllm = provider == "hosted_vllm"
        # vLLM defaults to raw logprobs; other servers' values are the sampler's own unless told otherwise
        mode = logprob_mode or (LogprobMode.RAW if vllm else LogprobMode.PROCESSED)
        tok = tokenizer or f"{provider}:{name}"
        how = "echo" if vllm else (f"scorer:{scorer.scorer.backend}" if scorer is not None else "none")
        self._scorer = ScorerInfo(
            backend="litellm", model=f"{provider}/{name}", weights=revision or f"served:{name}",
            tokenizer=tok, logprob_mode=mode, settings={"provider": provider, "top_k": top_k, "prompt": how},
        )
        self._caps = Capabilities(
            prompt_logprobs=vllm or scorer is not None, output_logprobs=True, max_top_k=max_top_k,
            logprob_mode=mode, tokenizer=tok,
        )
        self._origin = Origin.of(self._scorer)

    # ------------------------------------------------------------------ protocol
    @property
    def text_scorer(self) -> ScorerInfo:
        """Text is scored by the separate scorer when one is configured: its id, not this backend's, is the
        one the segments carry and the cache and baseline checks use."""
        return self._scorer_backend.text_scorer if self._scorer_backend is not None else self._scorer

    @property
    def text_cache_key(self) -> str:
        return self._scorer_backend.text_cache_key if self._scorer_backend is not None else self._scorer.id

    async def aclose(self) -> None:
        if self._scorer_backend is not None:
            await self._scorer_backend.aclose()

    def _common(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model, "api_key": self.api_key, "timeout": self.timeout,
            "num_retries": 0, "max_retries": 0,
        }
        if self.api_base:
            kw["api_base"] = self.api_base
        return kw

    @property
    def _where(self) -> str:
        return f"{self.model}" + (f" at {self.api_base}" if self.api_base else "")

    # ------------------------------------------------------------------ scoring
    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment:
        if not isinstance(text, str) or not text:
            raise InputError("text is empty: nothing to score")
        if self._scorer_backend is not None:
            return await self._scorer_backend.score(text, side=side)
        if self.provider != "hosted_vllm":
            raise UnscorableError(
                f"{self.model} returns no prompt logprobs: configure a separate scorer backend to score text"
            )
        import litellm

        async with self._sem:
            with map_backend_errors(self._where):
                resp = await litellm.atext_completion(
                    **self._common(), prompt=text, max_tokens=1, temperature=0.0, echo=True,
                    logprobs=self.top_k, extra_body=dict(self._extra) or None,
                )
        choices = _dump(resp).get("choices") or []
        if not choices:
            raise UnscorableError(f"{self._where}: completion response without choices")
        return echo_segment(choices[0], text, self._origin, side, self.top_k or None)

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]:
        return list(await asyncio.gather(*(self.score(t, side=side) for t in texts)))

    # ------------------------------------------------------------------ generation
    def _request(self, req: GenerationRequest, *, stream: bool) -> dict[str, Any]:
        if self._caps.max_top_k is not None and req.top_logprobs > self._caps.max_top_k:
            raise LogprobLimitError(
                f"{self._where}: top_logprobs={req.top_logprobs} is above this backend's limit "
                f"({self._caps.max_top_k})", None,
            )
        kw = self._common()
        kw.update(
            messages=[m.model_dump() for m in req.messages], max_tokens=req.max_tokens,
            temperature=req.temperature, top_p=req.top_p, logprobs=True, top_logprobs=req.top_logprobs,
        )
        if req.seed is not None:
            kw["seed"] = req.seed
        if req.stop:
            kw["stop"] = list(req.stop)
        extra = dict(self._extra)
        if req.score_prompt and self.provider == "hosted_vllm" and not stream:
            extra["prompt_logprobs"] = 1
        if extra:
            kw["extra_body"] = extra
        if stream:
            kw.update(stream=True, stream_options={"include_usage": True})
        return kw

    async def generate(self, request: GenerationRequest) -> Generation:
        import litellm

        kw = self._request(request, stream=False)
        async with self._sem:
            with map_backend_errors(self._where):
                resp = await litellm.acompletion(**kw)
        body = _dump(resp)
        choices = body.get("choices") or []
        if not choices:
            raise UnscorableError(f"{self._where}: chat response without choices")
        output = chat_output_segment(choices[0], self._origin, alternatives=request.alternatives)
        usage = body.get("usage") or {}
        gen = Generation(
            output=output, finish_reason=str(choices[0].get("finish_reason") or "unknown"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
        )
        if request.score_prompt:
            gen.prompt = await self._prompt_segment(request, body)
        return gen

    async def _prompt_segment(self, request: GenerationRequest, body: Mapping[str, Any]) -> Segment:
        if self.provider == "hosted_vllm":
            return prompt_segment(
                body.get("prompt_logprobs"), self._origin, contents=[m.content for m in request.messages],
                prompt_token_ids=body.get("prompt_token_ids"),
            )
        if self._scorer_backend is not None:  # the separate scorer screens the last user message
            users = [m.content for m in request.messages if m.role == "user"]
            return await self._scorer_backend.score(users[-1] if users else request.messages[-1].content,
                                                    side=Side.PROMPT)
        raise UnscorableError(f"{self.model} returns no prompt logprobs and no separate scorer is configured")

    async def stream(
        self, request: GenerationRequest, assembler: StreamAssembler | None = None
    ) -> AsyncIterator[TokenEvent]:
        """Token events as chunks arrive; a stalled stream raises BackendTimeoutError after ``chunk_timeout``.

        Pass an ``assembler`` to keep the stream's state: its ``segment()`` is the output segment at the end.
        """
        import litellm

        asm = assembler or StreamAssembler(self._origin, request.max_tokens, alternatives=request.alternatives)
        kw = self._request(request, stream=True)
        async with self._sem:
            with map_backend_errors(self._where):
                resp = await litellm.acompletion(**kw)
            got_logprobs = False
            it = resp.__aiter__()
            try:
                # one error mapper for the whole stream; the deadline covers waiting for the next chunk only,
                # never the consumer's time between events
                with map_backend_errors(self._where), ChunkDeadline(it, self.chunk_timeout) as deadline:
                    while True:
                        try:
                            chunk = await deadline.next()
                        except StopAsyncIteration:
                            break
                        for ev in asm.feed(chunk):  # read in place: no model_dump per chunk
                            got_logprobs = got_logprobs or ev.token is not None
                            yield ev
                if not got_logprobs:
                    raise UnscorableError(f"{self._where}: the stream carried no output logprobs")
                last = asm.finish()
                if last is not None:
                    yield last
            finally:
                close = getattr(resp, "aclose", None)
                if close is not None:
                    try:
                        await close()
                    except Exception:  # closing a broken stream must not hide the fault
                        pass
