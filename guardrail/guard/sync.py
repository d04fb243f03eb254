"""The one thin sync façade: a Guard's coroutines run on a private event loop in a daemon thread, so that a
sync caller (a script, a notebook, Flask) gets the same Guard without an async twin of any of it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .guard import Guard
from .report import SideDecision
from .result import GuardResult

__all__ = ["SyncGuard", "run_sync"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="guardrail-sync", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.loop.close()


_shared: _LoopThread | None = None
_shared_lock = threading.Lock()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the shared guardrail loop thread (refused from inside a running loop of
    the same thread, where it would deadlock: await the coroutine there instead)."""
    global _shared
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("called the sync guardrail API from a running event loop: await the async API instead")
    with _shared_lock:
        if _shared is None:
            _shared = _LoopThread()
    return _shared.run(coro)


class SyncGuard:
    """``SyncGuard(guard).chat(messages, ...)``: :meth:`Guard.chat` for sync callers."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def chat(self, messages: Any, **kw: Any) -> GuardResult:
        return run_sync(self.guard.chat(messages, **kw))

    def check_output(self, messages: Any, output: Any, **kw: Any) -> SideDecision:
        return run_sync(self.guard.check_output(messages, output, **kw))

    def screen_messages(self, messages: Any) -> SideDecision:
        return run_sync(self.guard.screen_messages(messages))

    def close(self) -> None:
        run_sync(self.guard.aclose())
