"""A deterministic scripted backend for unit tests and fault injection (no model, no I/O).

Every call takes the next entry of the script, in order, whatever the method:

* ``score`` / ``score_many`` (one entry per text) / ``score_reply`` expect a :class:`~guardrail.types.Segment`;
* ``generate`` expects a :class:`~guardrail.types.Generation`;
* ``stream`` expects a list of :class:`~guardrail.backends.base.TokenEvent` in which an exception instance
  is raised at its place (a fault mid-stream);
* an exception instance anywhere is raised instead of answering (a fault), a callable is called with the
  request and its result used (or raised).

A call with nothing left in the script, or an entry of the wrong kind, raises :class:`ScriptError`
(an AssertionError, so pytest shows it as a test failure): a test never silently gets nothing.  ``calls``
records ``(method, argument)`` for every call, ``streams`` ``(events yielded, ran to the end)`` per stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from ..types import Generation, LogprobMode, Segment, Side
from .base import BackendBase, Capabilities, GenerationRequest, ScorerInfo, TokenEvent

__all__ = ["ScriptError", "ScriptedBackend"]


class ScriptError(AssertionError):
    """The script ran out, or its next entry does not fit the call."""


class ScriptedBackend(BackendBase):
    def __init__(
        self,
        script: Iterable[Any] = (),
        *,
        capabilities: Capabilities | None = None,
        scorer: ScorerInfo | None = None,
        delay: float = 0.0,
    ) -> None:
        self._script: deque[Any] = deque(script)
        self.calls: list[tuple[str, Any]] = []
        self.streams: list[tuple[int, bool]] = []
        self.closed = False
        self.delay = delay
        self._scorer = scorer or ScorerInfo(
            backend="scripted", model="script", weights="none", tokenizer="script",
            logprob_mode=LogprobMode.RAW,
        )
        self._caps = capabilities or Capabilities(
            prompt_logprobs=True, output_logprobs=True, max_top_k=20, logprob_mode=LogprobMode.RAW,
            tokenizer="script",
        )

    def enqueue(self, *entries: Any) -> ScriptedBackend:
        self._script.extend(entries)
        return self

    @property
    def remaining(self) -> int:
        return len(self._script)

    async def _next(self, method: str, arg: Any, kind: type | tuple[type, ...]) -> Any:
        self.calls.append((method, arg))
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self._script:
            raise ScriptError(f"scripted backend: {method}() called but the script is empty")
        entry = self._script.popleft()
        if callable(entry) and not isinstance(entry, type | BaseException):
            entry = _call(entry, arg)
        if isinstance(entry, BaseException):
            raise entry
        if not isinstance(entry, kind):
            raise ScriptError(
                f"scripted backend: {method}() expected {_names(kind)}, the script has {type(entry).__name__}"
            )
        return entry

    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment:
        return await self._next("score", text, Segment)

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]:
        return [await self._next("score", t, Segment) for t in texts]

    async def score_reply(self, messages: Sequence[dict[str, str]], reply: str) -> Segment:
        """Teacher-forcing a reply (the embedded scorer's output path): the next Segment of the script."""
        return await self._next("score_reply", (list(messages), reply), Segment)

    async def generate(self, request: GenerationRequest) -> Generation:
        return await self._next("generate", request, Generation)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        events = await self._next("stream", request, list)
        sent, done = 0, False
        try:
            for ev in events:
                if isinstance(ev, BaseException):
                    raise ev
                if not isinstance(ev, TokenEvent):
                    raise ScriptError(f"scripted backend: stream() entry holds a {type(ev).__name__}")
                if self.delay:
                    await asyncio.sleep(self.delay)
                sent += 1
                yield ev
            done = True
        finally:  # (events yielded, ran to the end): a stream closed early shows as done=False
            self.streams.append((sent, done))

    async def aclose(self) -> None:
        self.closed = True


def _call(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except BaseException as exc:  # a callable may raise the fault itself
        return exc


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
