"""Detection metrics for the evaluation: pure numpy, no I/O.

Conventions used throughout:

* **scores**: higher = more suspicious.  **labels**: 1 = positive (should be flagged), 0 = negative.
* A record is **flagged** when ``score > threshold`` (strict).  Thresholds picked on negatives therefore never
  exceed the target false-positive rate, whatever the ties.
* NaN scores raise ``ValueError``: the caller drops unscorable records first.  Metrics that need both classes
  raise ``ValueError`` when only one is present.
* :func:`bootstrap_ci` resamples positives and negatives separately (stratified), so every replicate keeps the
  original class sizes.  :func:`summary` uses the same replicates for all its intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "auprc",
    "auroc",
    "bootstrap_ci",
    "reliability",
    "roc_curve",
    "summary",
    "threshold_at_fpr",
    "tpr_at_fpr",
]

FloatArray = NDArray[np.float64]
MetricFn = Callable[[FloatArray, FloatArray], float]


def _scores(scores: ArrayLike, name: str = "scores") -> FloatArray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"{name} contain {int(np.isnan(s).sum())} NaN value(s); drop unscorable records first")
    return s


def _validate(scores: ArrayLike, labels: ArrayLike) -> tuple[FloatArray, FloatArray]:
    s = _scores(scores)
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"scores and labels differ in shape: {s.shape} vs {y.shape}")
    if s.size == 0:
        raise ValueError("no records: scores and labels are empty")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    return s, y


def _split(scores: ArrayLike, labels: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Positive and negative scores; ``ValueError`` unless both classes are present."""
    s, y = _validate(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    _require_both(pos.size, neg.size)
    return pos, neg


def _require_both(n_pos: int, n_neg: int) -> None:
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"need both classes, got {n_pos} positive(s) and {n_neg} negative(s): metric is undefined")


def _auroc_split(pos: FloatArray, neg_sorted: FloatArray) -> float:
    """P(pos > neg) + 1/2 P(pos == neg), from positives and ascending-sorted negatives."""
    below = np.searchsorted(neg_sorted, pos, side="left")
    upto = np.searchsorted(neg_sorted, pos, side="right")
    u = below.sum() + 0.5 * (upto - below).sum()
    return float(u / (pos.size * neg_sorted.size))


def _k_allowed(fpr: float, n: int) -> int:
    """floor(fpr * n) false alarms; the tiny slack absorbs float error (0.29 * 100 = 28.999...)."""
    return math.floor(fpr * n + 1e-9)


def _threshold_sorted(neg_sorted: FloatArray, fpr: float) -> float:
    n = neg_sorted.size
    k = _k_allowed(fpr, n)
    return -math.inf if k >= n else float(neg_sorted[n - 1 - k])


def _check_fpr(fpr: float) -> None:
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve = Mann-Whitney U / (n_pos * n_neg), a tie counting 1/2."""
    pos, neg = _split(scores, labels)
    return _auroc_split(pos, np.sort(neg))


def _distinct_cumulative(s: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """True and false positives when flagging ``score >= t``, one entry per distinct t, t descending."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    return tps, fps


def auprc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision, ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (as sklearn's, no interpolation)."""
    s, y = _validate(scores, labels)
    n_pos = y.sum()
    if n_pos == 0:
        raise ValueError("need at least one positive: average precision is undefined")
    tps, fps = _distinct_cumulative(s, y)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(fpr, tpr) of ``score >= t`` for every distinct score t, descending, with (0, 0) prepended; ends at (1, 1)."""
    s, y = _validate(scores, labels)
    n_pos = int(y.sum())
    _require_both(n_pos, s.size - n_pos)
    tps, fps = _distinct_cumulative(s, y)
    return np.r_[0.0, fps / (s.size - n_pos)], np.r_[0.0, tps / n_pos]


def threshold_at_fpr(neg_scores: ArrayLike, fpr: float) -> float:
    """Smallest t with ``mean(neg_scores > t) <= fpr``.

    With n negatives, floor(fpr * n) false alarms are allowed and t is the (floor(fpr * n) + 1)-th largest
    negative score; ``-inf`` (flag everything) when floor(fpr * n) >= n.  Negatives tied with t are not flagged.
    """
    _check_fpr(fpr)
    neg = _scores(neg_scores, "neg_scores")
    if neg.size == 0:
        raise ValueError("no negative scores to pick a threshold from")
    return _threshold_sorted(np.sort(neg), fpr)


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float) -> float:
    """Share of positives with ``score > threshold_at_fpr(negatives, fpr)``."""
    _check_fpr(fpr)
    pos, neg = _split(scores, labels)
    return float(np.mean(pos > _threshold_sorted(np.sort(neg), fpr)))


def _bootstrap(
    stat: Callable[[FloatArray, FloatArray], Sequence[float]],
    pos: FloatArray,
    neg: FloatArray,
    n_boot: int,
    seed: int,
) -> FloatArray:
    """``stat(pos_b, neg_b)`` for each stratified replicate: array of shape (n_boot, n_stats)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        ip = rng.integers(0, pos.size, pos.size) if pos.size else np.empty(0, dtype=np.intp)
        ineg = rng.integers(0, neg.size, neg.size) if neg.size else np.empty(0, dtype=np.intp)
        out.append(stat(pos[ip], neg[ineg]))
    return np.asarray(out, dtype=np.float64).reshape(n_boot, -1)


def _percentile(values: FloatArray, level: float) -> FloatArray:
    """Percentile interval per column: shape (n_stats, 2)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    return np.percentile(values, q, axis=0).T


def bootstrap_ci(
    fn: MetricFn,
    scores: ArrayLike,
    labels: ArrayLike,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of ``fn(scores_b, labels_b)``.

    Positives and negatives are resampled separately with replacement, keeping their counts; each replicate is
    passed to ``fn`` as positives first, then negatives.  Deterministic for a given seed.
    """
    s, y = _validate(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    labels_b = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    values = _bootstrap(lambda p, n: [fn(np.r_[p, n], labels_b)], pos, neg, n_boot, seed)
    lo, hi = _percentile(values, level)[0]
    return float(lo), float(hi)


def _key(f: float) -> str:
    return format(f, "g")


def _r(x: float) -> float:
    return round(float(x), 6)


def summary(
    scores: ArrayLike,
    labels: ArrayLike,
    fprs: Sequence[float] = (0.001, 0.01, 0.05),
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC, AUPRC and TPR at each FPR with 95% stratified bootstrap intervals, JSON-ready.

    All intervals come from the same ``n_boot`` replicates.  Floats are rounded to 6 decimals; a non-finite
    threshold (``-inf``: every record flagged) is reported as ``None``.
    """
    pos, neg = _split(scores, labels)
    for f in fprs:
        _check_fpr(f)
    labels_all = np.r_[np.ones(pos.size), np.zeros(neg.size)]

    def stat(p: FloatArray, n: FloatArray) -> list[float]:
        n_sorted = np.sort(n)
        out = [_auroc_split(p, n_sorted), auprc(np.r_[p, n], labels_all)]
        out += [float(np.mean(p > _threshold_sorted(n_sorted, f))) for f in fprs]
        return out

    point = stat(pos, neg)
    ci = _percentile(_bootstrap(stat, pos, neg, n_boot, seed), 0.95)
    neg_sorted = np.sort(neg)
    thresholds = [_threshold_sorted(neg_sorted, f) for f in fprs]
    return {
        "auroc": _r(point[0]),
        "auroc_ci": [_r(v) for v in ci[0]],
        "auprc": _r(point[1]),
        "auprc_ci": [_r(v) for v in ci[1]],
        "tpr_at_fpr": {_key(f): _r(point[2 + i]) for i, f in enumerate(fprs)},
        "tpr_at_fpr_ci": {_key(f): [_r(v) for v in ci[2 + i]] for i, f in enumerate(fprs)},
        "threshold_at_fpr": {
            _key(f): _r(t) if math.isfinite(t) else None for f, t in zip(fprs, thresholds, strict=True)
        },
        "n_pos": int(pos.size),
        "n_neg": int(neg.size),
    }


def reliability(probs: ArrayLike, labels: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data on ``n_bins`` equal-width bins of [0, 1] and the expected calibration error.

    Bins are ``[lo, hi)``, the last one ``[lo, 1]``.  ECE = sum over non-empty bins of n_b / N * |frac_pos -
    mean_prob|.  Empty bins are listed with ``n = 0`` and ``None`` for their means.
    """
    p, y = _validate(probs, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    bins: list[dict[str, float | int | None]] = []
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        n_b = int(mask.sum())
        mean_prob = float(p[mask].mean()) if n_b else None
        frac_pos = float(y[mask].mean()) if n_b else None
        if mean_prob is not None and frac_pos is not None:
            ece += n_b / p.size * abs(frac_pos - mean_prob)
        bins.append(
            {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n_b, "mean_prob": mean_prob, "frac_pos": frac_pos}
        )
    return {"ece": float(ece), "bins": bins}
