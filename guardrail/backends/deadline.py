"""A deadline on each wait for the next item of a stream, at almost no cost per item.

``asyncio.timeout`` around every ``__anext__`` schedules and cancels a timer handle per chunk, which costs more
than normalizing the chunk's logprobs.  Here one timer serves the whole stream: each wait only records when it
began, and the timer, when it fires, either re-arms itself for the current wait's deadline or, if that wait is
overdue, cancels the task -- which then raises ``TimeoutError`` from :meth:`ChunkDeadline.next`, exactly where
``asyncio.timeout`` would.  Time the consumer spends between items never counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

__all__ = ["ChunkDeadline"]

T = TypeVar("T")


class ChunkDeadline(Generic[T]):
    """``await d.next()`` -> the stream's next item; ``TimeoutError`` if it takes over ``seconds`` (None: never).

    Use from the task that consumes the stream, and :meth:`close` it when done (or use ``with``).
    """

    def __init__(self, it: AsyncIterator[T], seconds: float | None) -> None:
        self._anext = it.__anext__
        self.seconds = seconds
        self._since: float | None = None  # when the current wait began; None between waits
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None
        if seconds is not None:
            self._loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            if task is None:
                raise RuntimeError("ChunkDeadline needs a running task")
            self._task = task
            self._handle = self._loop.call_at(self._loop.time() + seconds, self._fire)

    def _fire(self) -> None:
        assert self.seconds is not None
        now, since = self._loop.time(), self._since
        if since is not None and now - since >= self.seconds:
            self._expired = True
            self._handle = None
            self._task.cancel()  # the task is suspended in next(): the CancelledError arises there
            return
        self._handle = self._loop.call_at((now if since is None else since) + self.seconds, self._fire)

    async def next(self) -> T:
        if self._handle is None:
            if self._expired:
                raise TimeoutError("stream deadline already expired")
            return await self._anext()
        self._since = self._loop.time()
        try:
            return await self._anext()
        except asyncio.CancelledError:
            if self._expired and self._task.uncancel() == 0:
                raise TimeoutError(f"no stream item within {self.seconds} s") from None
            raise
        finally:
            self._since = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __enter__(self) -> ChunkDeadline[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
