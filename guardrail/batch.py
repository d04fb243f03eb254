"""Batch scoring: many texts, one model load, packed batches, a disk cache, progress reporting.

Used by baseline fitting and evaluation.  Identical texts are scored once; cached ones cost nothing; the
rest go to the backend ``batch_size`` at a time (the embedded backend packs short texts several to a decode
call).  ``errors="skip"`` returns ``None`` for a text the backend refuses (empty, invalid) instead of
stopping the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from .backends.base import Backend
from .cache import ScoreCache
from .errors import InputError
from .types import Segment, Side

__all__ = ["score_replies", "score_texts"]


async def score_texts(
    backend: Backend,
    texts: Sequence[str],
    *,
    side: Side = Side.TEXT,
    cache: ScoreCache | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    errors: Literal["raise", "skip"] = "raise",
) -> list[Segment | None]:
    """Score ``texts`` in order.  ``progress(n)`` is called with the number of texts just finished.  The cache
    is keyed by ``backend.text_cache_key``: the id of the scorer that scores the text, the one the segments carry."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    key = backend.text_cache_key
    done: dict[str, Segment | None] = {}
    unique = list(dict.fromkeys(texts))
    if cache is not None:
        done.update(cache.get_many(key, side, [t for t in unique if t]))
    if progress and done:
        progress(sum(1 for t in texts if t in done))
    todo = [t for t in unique if t not in done]
    for a in range(0, len(todo), batch_size):
        part = todo[a : a + batch_size]
        try:
            segs: list[Segment | None] = list(await backend.score_many(part, side=side))
        except InputError:
            if errors == "raise":
                raise
            segs = []
            for t in part:  # find the bad ones, keep the good ones
                try:
                    segs.append(await backend.score(t, side=side))
                except InputError:
                    segs.append(None)
        good = [s for s in segs if s is not None]
        if cache is not None and good:
            cache.put_many(good, key=key)
        for t, s in zip(part, segs, strict=True):
            done[t] = s
        if progress:
            fresh = set(part)
            progress(sum(1 for t in texts if t in fresh))
    return [done[t] for t in texts]


async def score_replies(
    backend: Backend,
    pairs: Sequence[tuple[str, str]],
    *,
    cache: ScoreCache | None = None,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[Segment | None]:
    """Score each reply as the assistant's answer to its context (one user message), output side, cached.

    Needs a backend that teacher-forces replies (``score_replies``, the embedded model); a reply that cannot be
    scored (empty, prompt + reply longer than the context) gives None.
    """
    fn = getattr(backend, "score_replies", None)
    if fn is None:
        from .errors import UnscorableError

        raise UnscorableError(f"{backend.scorer.backend} cannot teacher-force replies: score outputs without context")
    key = backend.text_cache_key
    out: list[Segment | None] = [None] * len(pairs)
    done = cache.get_replies(key, pairs) if cache is not None else {}
    for i, seg in done.items():
        out[i] = seg
    if progress and done:
        progress(len(done))
    todo = [i for i in range(len(pairs)) if i not in done]
    for a in range(0, len(todo), batch_size):
        part = todo[a : a + batch_size]
        segs = await fn([([{"role": "user", "content": pairs[i][0]}], pairs[i][1]) for i in part], skip=True)
        if cache is not None:
            cache.put_replies([pairs[i] for i in part], segs, key=key)
        for i, s in zip(part, segs, strict=True):
            out[i] = s
        if progress:
            progress(len(part))
    return out
