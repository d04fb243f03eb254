"""Human review: a small queue protocol and an in-memory implementation (the durable queue and its UI are
the review service's; this serves the Guard and its tests)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Decision", "InMemoryReviewQueue", "ReviewItem", "ReviewQueue"]

Decision = Literal["approve", "deny"]


@dataclass
class ReviewItem:
    request_id: str
    side: str
    report: dict  # the GuardReport as JSON
    id: str = ""
    decision: Decision | None = None
    note: str = ""
    _done: asyncio.Event | None = field(default=None, repr=False)


@runtime_checkable
class ReviewQueue(Protocol):
    async def submit(self, item: ReviewItem) -> str: ...

    async def wait(self, review_id: str, timeout: float) -> Decision | None: ...

    async def decide(self, review_id: str, decision: Decision, note: str = "") -> None: ...

    async def get(self, review_id: str) -> ReviewItem | None: ...


class InMemoryReviewQueue:
    """Items live in this process; ``wait`` returns the decision, or None after ``timeout`` seconds."""

    def __init__(self) -> None:
        self._items: dict[str, ReviewItem] = {}
        self._ids = itertools.count(1)

    async def submit(self, item: ReviewItem) -> str:
        item.id = item.id or f"rev-{next(self._ids)}"
        item._done = asyncio.Event()
        self._items[item.id] = item
        return item.id

    async def wait(self, review_id: str, timeout: float) -> Decision | None:
        item = self._items[review_id]
        if item.decision is None and item._done is not None:
            try:
                await asyncio.wait_for(item._done.wait(), timeout)
            except TimeoutError:
                return None
        return item.decision

    async def decide(self, review_id: str, decision: Decision, note: str = "") -> None:
        item = self._items.get(review_id)
        if item is None:
            raise KeyError(f"no review {review_id!r}")
        item.decision, item.note = decision, note
        if item._done is not None:
            item._done.set()

    async def get(self, review_id: str) -> ReviewItem | None:
        return self._items.get(review_id)

    def pending(self) -> list[ReviewItem]:
        return [i for i in self._items.values() if i.decision is None]
