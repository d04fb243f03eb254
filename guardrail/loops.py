"""The loop rule that labels degenerate generations independently of any detector (pure Python).

A generation loops when some n-gram of at least ``n`` tokens occurs at least ``times`` times within its last
``last`` tokens (greedy SmolLM2 loops on short poems; a looping answer is not a normal generation: kept out of
fitting and calibration, used as a positive).  Tokens are compared by key (e.g. their bytes), so the rule
means the same on every backend.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

__all__ = ["has_loop", "loop_onset"]


def has_loop(keys: Sequence[Hashable], n: int = 3, times: int = 4, last: int = 100) -> bool:
    return loop_onset(keys, n, times, last) is not None


def loop_onset(keys: Sequence[Hashable], n: int = 3, times: int = 4, last: int = 100) -> int | None:
    """Index (into ``keys``) where the first n-gram that reaches ``times`` occurrences within a window of
    ``last`` tokens first occurred, or None.  Scans the stream as it would arrive, so the onset is causal."""
    seen: dict[tuple, list[int]] = {}
    for i in range(n - 1, len(keys)):
        g = tuple(keys[i - n + 1 : i + 1])
        pos = seen.setdefault(g, [])
        pos.append(i - n + 1)
        while pos and pos[0] < i - last + 1:
            pos.pop(0)
        if len(pos) >= times:
            return pos[0]
    return None


