"""Where a baseline's decision points in the text: character spans of what made it flag (pure numpy).

* a CUSUM signal (``surprise_cusum``, ``excess_cusum``) decides: the stretch that accumulated it -- the whole
  anomalous run (an optimised suffix), not one window of it;
* another high-side signal: the top window of the narrowest width;
* a low-side signal (abnormally predictable text: filler, loops): the lowest window of the widest width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..scoring import TokenArrays, window_means
from .features import CUSUM_DRIFT, EXCESS_DRIFT, cusum_stretch, tail_of
from .model import Baseline

__all__ = ["CUSUM_DRIFTS", "Span", "decision_spans", "extreme_window", "merge", "scored_windows", "window_span"]

Span = tuple[int, int]

CUSUM_DRIFTS = {"surprise_cusum": CUSUM_DRIFT, "excess_cusum": EXCESS_DRIFT}


def scored_windows(a: TokenArrays, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Window means of width ``min(width, #scored)`` over the scored tokens only (excluded tokens skipped), the
    scored tokens' indices, and the effective width."""
    idx = (~np.isnan(a.nll)).nonzero()[0]
    w = min(width, idx.size)
    return (window_means(a.nll[idx], w) if w else np.empty(0)), idx, w


def window_span(a: TokenArrays, idx: np.ndarray, i: int, w: int) -> Span:
    """Characters of the window of ``w`` scored tokens starting at scored token ``i``."""
    return int(a.start[idx[i]]), int(a.end[idx[i + w - 1]])


def extreme_window(a: TokenArrays, width: int, low: bool) -> Span | None:
    m, idx, w = scored_windows(a, width)
    if not m.size:
        return None
    return window_span(a, idx, int(m.argmin() if low else m.argmax()), w)


def merge(spans: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _is_low(b: Baseline, feats: Mapping[str, float], signal: str) -> bool:
    """Whether a two-sided signal is on its low side (below its reference median)."""
    bk = b.calibrator.buckets[b.calibrator.bucket_of(feats["n_scored"])]
    ref = bk.ref(signal)
    return bool(ref.size) and bk.residual(signal, feats[signal], feats["n_scored"]) < float(np.median(ref))


def decision_spans(b: Baseline, a: TokenArrays, feats: Mapping[str, float], top_signal: str) -> list[Span]:
    """The characters behind a decision whose most extreme signal is ``top_signal``."""
    if top_signal in CUSUM_DRIFTS:
        st = cusum_stretch(a.nll, a.entropy, CUSUM_DRIFTS[top_signal])
        if st is not None:
            return [(int(a.start[st[0]]), int(a.end[st[1] - 1]))]
    tail = tail_of(top_signal) if top_signal != "detector" else "high"
    low = tail == "low" or (tail == "both" and top_signal in feats and _is_low(b, feats, top_signal))
    widths = sorted(b.widths)
    span = extreme_window(a, widths[-1] if low else widths[0], low)
    return [span] if span is not None else []
