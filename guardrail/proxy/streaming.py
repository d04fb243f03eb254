"""``stream: true`` through the Guard: the SSE response grows as the Guard releases assessed text.

The prompt is screened before the response starts, so a rejected prompt is still a plain HTTP 400.  Then the
headers go out (the final action is not known yet: ``x-guardrail-action: pending``), released text follows
chunk by chunk (an SSE comment keeps the connection alive while text is held back), and the stream ends with
the finish chunk (``content_filter`` when cut or rejected), one chunk without choices carrying the report (and
the usage when asked), and ``data: [DONE]``.  A client that goes away closes the Guard's stream, which closes
the backend's: the generation is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from fastapi.responses import StreamingResponse

from ..guard.streaming import StreamDelta, StreamEnd, StreamEvent, StreamStart
from ..jsonio import dumps
from .errors import from_exception
from .responses import TextChunks, logprobs_content

log = logging.getLogger("guardrail.proxy")

__all__ = ["KEEPALIVE_S", "Chunks", "GuardStream", "GuardedStreamingResponse", "sse_stream"]

KEEPALIVE_S = 10.0


class GuardedStreamingResponse(StreamingResponse):
    """Runs ``on_close`` however the response ends, even when the body was never started (a client gone
    before the first byte): the Guard's stream is closed and the admission slot released exactly once."""

    def __init__(self, content: Any, *, on_close: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


class GuardStream:
    """The Guard's event stream, read ahead by one task into a small buffer so that keep-alives can go out while
    it waits: a read that finds events buffered takes them at once (no task, no timer per event: a task and an
    ``asyncio.wait`` per event cost ~45 us here, half the 0.1 ms a streamed chunk may cost), one that finds none waits
    on a future with a timer.  The reader stops when ``buffer`` events wait (the client is slow: the backend is
    not read further).  Closed once, by whoever gets there first (the body's end, a client gone, a response
    never started): the reading task is cancelled first -- closing a generator that a task is still reading
    would fail and leave the backend's stream running -- then the generator, which closes the backend's stream."""

    def __init__(self, events: AsyncIterator[StreamEvent], buffer: int = 64) -> None:
        self.events = events
        self._buf: deque[StreamEvent] = deque()
        self._cap = max(1, buffer)
        self._reader: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # the consumer, waiting for an event
        self._room: asyncio.Future[None] | None = None  # the reader, waiting for room in the buffer
        self._ended = False  # the reader is done: the stream ended or failed (``_error``)
        self._error: BaseException | None = None
        self._closed = False

    async def _read(self) -> None:
        try:
            async for ev in self.events:
                self._buf.append(ev)
                _resolve(self._wake)
                while len(self._buf) >= self._cap:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
        except Exception as e:  # handed to the consumer, raised by next()
            self._error = e
        except asyncio.CancelledError:
            if self._closed:  # aclose() cancelled the read
                raise
            # a cancellation inside the Guard's stream that nobody here asked for: an error, not a quiet end
            self._error = RuntimeError("the guarded stream was cancelled")
        finally:
            self._ended = True
            _resolve(self._wake)

    async def next(self, wait_s: float) -> StreamEvent | None:
        """The next event, or None when ``wait_s`` passed without one (the read goes on)."""
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        if not self._buf and not self._ended:
            loop = asyncio.get_running_loop()
            fut = self._wake = loop.create_future()
            timer = loop.call_later(wait_s, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._wake = None
            if not self._buf and not self._ended:
                return None
        if self._buf:
            ev = self._buf.popleft()
            _resolve(self._room)
            return ev
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    def ready(self) -> list[StreamEvent]:
        """Every event already buffered (none waited for): a burst goes out as one write."""
        out = list(self._buf)
        self._buf.clear()
        _resolve(self._room)
        return out

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended = True  # a reader cancelled before its first step never runs its own finally
        _resolve(self._wake)
        # shielded: a client gone means Starlette is cancelling this task, and every unshielded await would be
        # cancelled before the backend's stream is closed
        with anyio.CancelScope(shield=True):
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)
            await self.events.aclose()


def _resolve(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _data(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


class Chunks:
    """The Guard's stream events as OpenAI ``chat.completion.chunk`` dicts (shared by the proxy's SSE and
    ``guardrail.wrap``): the role chunk, one chunk per released delta, then the finish chunk and a last chunk
    without choices carrying the report (and the usage when asked)."""

    def __init__(self, start: StreamStart, model: str, *, logprobs: bool, top_logprobs: int,
                 include_usage: bool) -> None:
        self.cid, self.created, self.model = f"chatcmpl-{start.report.request_id}", int(time.time()), model
        self.logprobs, self.top, self.include_usage = logprobs, top_logprobs, include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> dict[str, Any]:
        return {"id": self.cid, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]}

    def role(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": ""})

    def of(self, ev: StreamEvent) -> list[dict[str, Any]]:
        if isinstance(ev, StreamDelta):
            if not (ev.text or ev.tokens or ev.tool_calls):
                return []
            lp = {"content": logprobs_content(ev.tokens, self.top), "refusal": None} if self.logprobs else None
            delta: dict[str, Any] = {"content": ev.text} if ev.text or not ev.tool_calls else {}
            if ev.tool_calls:
                delta["tool_calls"] = ev.tool_calls
            return [self._chunk(delta, lp=lp)]
        if isinstance(ev, StreamEnd):
            last: dict[str, Any] = {"id": self.cid, "object": "chat.completion.chunk", "created": self.created,
                                    "model": self.model, "choices": []}
            if self.include_usage:
                last["usage"] = ev.result.report.usage.model_dump()
            last["guardrail"] = ev.result.report.model_dump(mode="json")
            return [self._chunk({}, ev.finish_reason), last]
        return []


async def sse_stream(events: GuardStream, start: StreamStart, *, model: str, include_usage: bool,
                     logprobs: bool, top_logprobs: int, on_end: Callable[[StreamEnd], None],
                     on_close: Callable[[], Awaitable[None]], keepalive_s: float | None = None,
                     text: bool = False) -> AsyncIterator[bytes]:
    """``text``: the chunks of a ``/v1/completions`` stream (``text_completion``)."""
    chunks = Chunks(start, model, logprobs=logprobs, top_logprobs=top_logprobs, include_usage=include_usage)
    shape = TextChunks() if text else (lambda c: c)
    keepalive_s = KEEPALIVE_S if keepalive_s is None else keepalive_s
    try:
        if not text:
            yield _data(chunks.role())
        while True:
            ev = await events.next(keepalive_s)
            if ev is None:
                yield b": keep-alive\n\n"
                continue
            out: list[bytes] = []
            try:
                for e in (ev, *events.ready()):  # what is already there goes out in one write
                    if isinstance(e, StreamEnd):
                        if out:  # the text before the end leaves first, whatever the end's handling does
                            yield b"".join(out)
                            out = []
                        on_end(e)
                    out.extend(_data(shape(c)) for c in chunks.of(e))
                    if isinstance(e, StreamEnd):
                        out.append(b"data: [DONE]\n\n")
                        yield b"".join(out)
                        return
            except Exception:
                if out:  # what was formatted before the failure still goes out, then the error event
                    yield b"".join(out)
                raise
            if out:
                yield b"".join(out)
    except StopAsyncIteration:  # the Guard always ends with StreamEnd; a stream without one is cut short
        return
    except Exception as e:  # a backend fault mid-stream: the status is sent already, so an error event ends it
        err = from_exception(e)
        log.warning("stream ended by an error", exc_info=err.status == 500,  # unexpected: the traceback is logged
                    extra={"request_id": start.report.request_id, "status": err.status, "error": err.message})
        yield _data({"error": {"message": err.message, "type": "backend_error" if err.status >= 500 else
                               "invalid_request_error", "param": None, "code": err.code}})
        yield b"data: [DONE]\n\n"
    finally:
        await on_close()  # closes the Guard's stream, so the backend's: the generation stops
