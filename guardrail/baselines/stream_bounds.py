"""Precomputed per-signal thresholds of the streaming abort rule (pure numpy/python, no I/O).

A checkpoint aborts when its tail statistic ``tail_p`` is at most the stream's cut-off.  Computing ``tail_p``
means scoring every signal against every cross-conformal part's reference (~0.7 ms); most checkpoints of a normal
stream are nowhere near the cut-off.  Everything in that computation is monotone, so the cut-off can be turned
into thresholds on the signals themselves, once per (calibrator, cut-off):

* ``tail_p = continuous_p(sum_k tail_count(cal_k, S_k), n)`` falls as any part's combined score ``S_k`` rises;
  the largest common score ``s*`` with ``continuous_p(sum_k tail_count(cal_k, s*), n) > cut-off`` (bisection,
  per length bucket) means: when every ``S_k <= s*``, the checkpoint cannot abort.
* ``S_k = max_j -log p_kj``, so ``S_k <= s*`` exactly when every signal's p-value against part k is at least
  ``exp(-s*)``; each signal's p-value is monotone in its value (its tail: high, low, or both), so that is an
  interval of the signal's value (bisection on the reference's own tail function), shifted by the bucket's
  length trend at the checkpoint's length and intersected over the parts.
* The detector signal is one score per part (each part's detector): computed for all parts at once and compared
  with each part's bound.

:meth:`StreamBounds.clear` is then a handful of comparisons (and one small matrix product for the detector): True
means the checkpoint certainly does not abort (the full assessment would give ``tail_p`` above the cut-off;
property-tested); False means "compute the full assessment", which decides.  Margins are one-sided: a value on a
boundary goes to the full assessment, never the other way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .conformal import Calibrator
from .detector import Detector
from .tails import _Tail, continuous_p, tail_count

__all__ = ["StreamBounds", "stream_bounds"]

_MARGIN = 1e-9  # relative slack on every bound, on the side that sends a boundary case to the full assessment


def _last_true(ok, lo: float, hi: float, cap: float) -> float:
    """The largest x (a point ``ok`` was evaluated at) with ``ok(x)``, for ``ok`` true at ``lo`` and true up to some
    point and false beyond: ``hi`` moves out, doubling its distance from ``lo``, until ``ok`` fails there (+inf
    once past ``cap``), then bisection to adjacent floats."""
    step = hi - lo
    while ok(hi):
        if hi > cap:
            return math.inf
        lo, step = hi, 2 * step
        hi = lo + step
    for _ in range(200):  # to adjacent floats
        mid = lo + (hi - lo) / 2
        if not lo < mid < hi:
            break
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _largest_satisfying(tail: _Tail, c: float) -> float:
    """The largest x (a value the tail function was evaluated at) with ``tail.upper(x) >= c``; +inf when every x
    satisfies it, -inf when none does.  ``upper`` is non-increasing in x."""
    if tail.n == 0 or c <= 0:
        return math.inf
    lo = float(tail.ref[0]) - 1.0  # upper(lo) = 1
    if tail.upper(lo) < c:
        return -math.inf
    return _last_true(lambda x: tail.upper(x) >= c, lo, float(tail.ref[-1]) + 1.0, 1e300)


def _interval(tails: tuple[_Tail, _Tail], kind: str, c: float) -> tuple[float, float]:
    """The residual values whose tail p-value (conformal.py's ``_tails_p``) is >= ``c``, as [lo, hi]."""
    hi_t, lo_t = tails
    if hi_t.n == 0:
        return -math.inf, math.inf
    if kind == "both":  # p = min(1, 2 min(upper, lower)) >= c  <=>  both >= c / 2 (c <= 1)
        c = c / 2
    hi = _largest_satisfying(hi_t, c) if kind in ("high", "both") else math.inf
    lo = -_largest_satisfying(lo_t, c) if kind in ("low", "both") else -math.inf
    return lo, hi


def _shrink(lo: float, hi: float) -> tuple[float, float]:
    return (lo + _MARGIN * (1 + abs(lo)) if math.isfinite(lo) else lo,
            hi - _MARGIN * (1 + abs(hi)) if math.isfinite(hi) else hi)


def _common_score(cal: Calibrator, bucket: int, cut: float) -> float | None:
    """The largest s with ``continuous_p(sum_k tail_count(cal_k, s), n) > cut`` (with margin); None when even
    s = 0 (every signal at p = 1) would abort, inf when nothing can."""
    n = cal.n_calib(bucket)
    cals = [p.buckets[bucket].calib_array() for p in cal.parts]

    def ok(s: float) -> bool:
        return continuous_p(sum(tail_count(c, s) for c in cals), n) > cut * (1 + _MARGIN)

    if not ok(0.0):
        return None
    s = _last_true(ok, 0.0, 1.0, 1e4)  # -log p of any signal is at most ~690 (P_FLOOR): past 1e4 nothing aborts
    return s * (1 - _MARGIN)


class _DetectorBank:
    """Every part's detector score at once.  The parts' detectors (fitted together: same kind and inputs) fold into
    one matrix: robust_cov's ``(z - loc)' P (z - loc)`` is ``sum_i sign_i y_i^2`` with ``y = U (v / scale - mean / scale
    - loc)`` and ``P = U' diag(sign) U`` (its eigendecomposition), so all parts are one matrix-vector product of the
    raw inputs ``v`` and one more for the per-part sums (compared squared: no square root); logistic is one product.
    A missing input (z = 0 in Detector.score, a different value per part) or detectors that differ go through each
    part's own ``Detector.score``."""

    def __init__(self, detectors: list[Detector]) -> None:
        d0 = detectors[0]
        self.detectors, self.names, self.kind = detectors, d0.features, d0.kind
        self._log_len = self.names.index("log_len") if "log_len" in self.names else None
        self.fast = all(d.kind == d0.kind and d.features == d0.features for d in detectors)
        if not self.fast:
            return
        mean, scale = np.array([d.mean for d in detectors]), np.array([d.scale for d in detectors])
        if d0.kind == "logistic":
            coef = np.array([d.coef for d in detectors])
            c = (coef * mean / scale).sum(axis=1) - np.array([d.intercept for d in detectors])
            self.w = np.ascontiguousarray(np.hstack([coef / scale, -c[:, None]]))  # (K, d + 1): [v, 1] -> scores
            return
        # P = Q diag(lam) Q' (P is only positive semi-definite when an input was constant or collinear; a rounding
        # -1e-16 eigenvalue keeps its sign, so the quadratic form is the one Detector.score computes)
        eig = [np.linalg.eigh(np.asarray(d.precision)) for d in detectors]
        us = [np.sqrt(np.abs(lam))[:, None] * q.T for lam, q in eig]
        off = mean / scale + np.array([d.location for d in detectors])
        w = np.concatenate([u / sc for u, sc in zip(us, scale, strict=True)])  # (K d, d)
        c = np.concatenate([u @ o for u, o in zip(us, off, strict=True)])
        self.w = np.ascontiguousarray(np.hstack([w, -c[:, None]]))  # [v, 1] -> y
        # q_k = sum of sign * y^2 over part k's block: one more product
        sign = np.concatenate([np.where(lam < 0, -1.0, 1.0) for lam, _ in eig])
        d = len(self.names)
        self.g = np.zeros((len(detectors), len(sign)))
        for k in range(len(detectors)):
            self.g[k, k * d:(k + 1) * d] = sign[k * d:(k + 1) * d]

    def scores(self, feat: Mapping[str, float]) -> np.ndarray:
        """Each part's detector score."""
        return np.sqrt(np.maximum(0.0, self._fast(feat))) if self.kind == "robust_cov" else self._fast(feat)

    def _fast(self, feat: Mapping[str, float]) -> np.ndarray:
        """The scores (robust_cov: squared distances)."""
        nan = math.nan
        row = [feat.get(n, nan) for n in self.names]
        row.append(1.0)
        if self._log_len is not None:
            row[self._log_len] = math.log(max(1.0, feat["n_scored"]))
        if not self.fast or not math.isfinite(sum(row)):
            s = np.array([d.score(feat) for d in self.detectors])
            return s * s if self.kind == "robust_cov" else s
        y = self.w @ np.array(row, dtype=np.float64)
        return y if self.kind == "logistic" else self.g @ (y * y)

    def bound(self, hi: np.ndarray) -> list[float]:
        """Per-part upper bounds on the scores as :meth:`within` compares them (robust_cov: squared; a negative
        bound on a distance cannot be met: -1 stays below every square)."""
        if self.kind == "robust_cov":
            hi = np.where(hi >= 0, hi * hi, -1.0)
        return hi.tolist()

    def within(self, feat: Mapping[str, float], bound: list[float]) -> bool:
        """Every part's score within its :meth:`bound`."""
        return all(q <= b for q, b in zip(self._fast(feat).tolist(), bound, strict=True))


class StreamBounds:
    """Thresholds on the signals under which a checkpoint's ``tail_p`` stays above ``cut`` (see module doc)."""

    def __init__(self, cal: Calibrator, cut: float) -> None:
        self.cal, self.cut = cal, cut
        self.signals = [s for s in cal.signals if s != "detector"]
        dets = [p.detector for p in cal.parts]
        self.bank = _DetectorBank(dets) if "detector" in cal.signals and all(dets) else None  # type: ignore[arg-type]
        # per bucket: None (cannot clear), or per part the residual interval of every signal
        self._resid: list[list[dict[str, tuple[float, float]]] | None] = []
        for b in range(len(cal.buckets)):
            s = _common_score(cal, b, cut)
            if s is None:
                self._resid.append(None)
                continue
            c = math.exp(-s) if math.isfinite(s) else 0.0
            self._resid.append([{sig: _shrink(*_interval(p.buckets[b].tails(sig), kind, c))
                                 for sig, kind in cal.signals.items()} for p in cal.parts])
        self._raw: dict[tuple[int, int], tuple[list[tuple[str, float, float]], list[float] | None] | None] = {}

    def _raw_bounds(self, b: int, n: int):
        """Bounds on the signals' raw values at ``n`` scored tokens in bucket ``b`` (the length trend added back),
        intersected over the parts; the detector's per part.  Cached per (bucket, length)."""
        key = (b, n)
        if key in self._raw:
            return self._raw[key]
        parts = self._resid[b]
        if parts is None:
            out = None
        else:
            rows = []
            for sig in self.signals:
                lo, hi = -math.inf, math.inf
                for p, res in zip(self.cal.parts, parts, strict=True):
                    rlo, rhi = res[sig]
                    lo, hi = max(lo, _raw(p.buckets[b], sig, rlo, n, -1)), min(hi, _raw(p.buckets[b], sig, rhi, n, 1))
                if math.isfinite(lo) or math.isfinite(hi):
                    rows.append((sig, lo, hi))
            det = None
            if self.bank is not None:
                det = self.bank.bound(np.array([_raw(p.buckets[b], "detector", res["detector"][1], n, 1)
                                                for p, res in zip(self.cal.parts, parts, strict=True)]))
            out = (rows, det)
        if len(self._raw) < 4096:
            self._raw[key] = out
        return out

    def clear(self, feat: Mapping[str, float]) -> bool:
        """True: this checkpoint cannot abort (its full ``tail_p`` is above the cut-off).  False: assess it."""
        n = feat["n_scored"]
        bounds = self._raw_bounds(self.cal.bucket_of(n), int(n))
        if bounds is None:
            return False
        rows, det = bounds
        for sig, lo, hi in rows:
            x = feat.get(sig, math.nan)
            if x < lo or x > hi:  # NaN compares False: a missing signal reads p = 1 in the full assessment too
                return False
        if det is not None:
            if not self.bank.within(feat, det):  # type: ignore[union-attr]
                return False
        return True


def _raw(bucket, signal: str, r: float, n: int, side: int) -> float:
    """The raw value whose residual (``Bucket.residual``) is ``r``, rounded towards the inside (``side`` +1: an upper
    bound, rounded down; -1: a lower bound, rounded up) so that a value within it has its residual within ``r``."""
    if not math.isfinite(r):
        return r
    t = bucket.trend.get(signal)
    if t is None:
        return r
    x = r + (t[0] + t[1] * math.log(max(1.0, n)))
    while side * (bucket.residual(signal, x, n) - r) > 0:
        x = math.nextafter(x, -side * math.inf)
    return x


def stream_bounds(cal: Calibrator, cut: float) -> StreamBounds:
    """The bounds for ``cut``, made once per calibrator and cut-off."""
    cache = cal._bounds
    b = cache.get(cut)
    if b is None:
        b = cache[cut] = StreamBounds(cal, cut)
    return b
