"""One model, many callers: a fair, bounded, cancel-safe admission gate.

The embedded llama.cpp context serves one call at a time.  Waiting for it must not cost a thread (the event
loop's default pool is what a running stream needs for its own decode steps: with a few waiters each parked in
``to_thread(lock.acquire)`` on 2 cores, the stream holding the model could not get a thread to finish, and
nothing moved), must not leak the model when a waiter is cancelled (a cancelled ``to_thread(lock.acquire)``
still acquires the lock later, in its thread, and nobody releases it), and must not queue without bound.

:class:`ModelGate` keeps a FIFO of waiters.  An async waiter is a future on its own event loop (any loop: the
gate is shared by threads and loops, so it is guarded by a ``threading.Lock`` and grants through
``call_soon_threadsafe``); a blocking caller (``close()``) waits on an event.  ``release`` hands the model to the
next waiter still waiting; a waiter cancelled before its grant is skipped, one cancelled after it hands the
model on.  When ``max_waiting`` callers already wait, :class:`~guardrail.errors.BackendBusyError` is raised at
once (the proxy answers 429 with Retry-After), never a hang.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..errors import BackendBusyError, ConfigError

__all__ = ["ModelGate"]


class _Waiter:
    __slots__ = ("event", "fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.fut: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.event = threading.Event() if loop is None else None


class ModelGate:
    def __init__(self, max_waiting: int = 64, name: str = "model") -> None:
        if max_waiting < 0:
            raise ConfigError(f"max_waiting must be >= 0, got {max_waiting}")
        self.max_waiting = max_waiting
        self.name = name
        self._mu = threading.Lock()
        self._held = False
        self._waiters: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def held(self) -> bool:
        return self._held

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """None when the model was free and is now ours; else the queued waiter."""
        with self._mu:
            if not self._held and not self._waiters:
                self._held = True
                return None
            if len(self._waiters) >= self.max_waiting:
                raise BackendBusyError(f"{self.name} is busy: {len(self._waiters)} requests already wait for it "
                                       f"(max_waiting={self.max_waiting}); retry later", retry_after=1.0)
            w = _Waiter(loop)
            self._waiters.append(w)
            return w

    async def acquire(self) -> None:
        w = self._enqueue(asyncio.get_running_loop())
        if w is None:
            return
        assert w.fut is not None
        try:
            await w.fut
        except asyncio.CancelledError:
            with self._mu:
                if w in self._waiters:  # not granted yet: leave the queue
                    self._waiters.remove(w)
                    raise
            # granted (or being granted) as we were cancelled: the grant callback sees the cancelled future and
            # hands the model on, or it already set the result and the model is ours to hand on
            if w.fut.done() and not w.fut.cancelled():
                self.release()
            raise

    def acquire_blocking(self) -> None:
        w = self._enqueue(None)
        if w is not None:
            assert w.event is not None
            w.event.wait()

    def release(self) -> None:
        with self._mu:
            while self._waiters:
                w = self._waiters.popleft()
                if w.event is not None:
                    w.event.set()
                    return
                assert w.loop is not None and w.fut is not None
                if w.fut.done():  # cancelled while queued (its task will not run the removal): skip it
                    continue
                try:
                    w.loop.call_soon_threadsafe(self._grant, w)
                    return
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    continue
            self._held = False

    def _grant(self, w: _Waiter) -> None:
        """On the waiter's loop: give it the model, or hand the model on if it was cancelled meanwhile."""
        assert w.fut is not None
        if w.fut.done():
            self.release()
        else:
            w.fut.set_result(None)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()
