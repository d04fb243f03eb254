"""Tail probabilities of one signal against a sorted reference, and the conformal p-value made continuous:
the pure arithmetic the calibrator (conformal.py) runs for every signal of every fold of every assessment.

Beyond the k-th largest reference value the empirical tail is continued by an exponential fitted to the k
largest (mean excess), so values past the whole reference still rank; each reference's tail parameters are
worked out once (:class:`_Tail`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np

from .features import Tail

__all__ = ["P_FLOOR", "CountTail", "continuous_p", "tail_count"]


P_FLOOR = 1e-300  # smallest p-value reported: -log p <= 690.8


def _resolution(ref: np.ndarray, k: int) -> float:
    """Smallest gap between distinct values among the reference's top k + 1 distinct values (0 if one)."""
    top = np.unique(ref[-(4 * k + 1):])[-(k + 1):]
    return float(np.diff(top).min()) if top.size > 1 else 0.0


class _Tail:
    """A sorted reference with its exponential-tail parameters worked out once (per signal and side of a
    bucket: a text's assessment reads them for every signal of every fold)."""

    __slots__ = ("beta", "k", "n", "ref", "u")

    def __init__(self, ref: np.ndarray) -> None:
        self.ref, self.n = ref, int(ref.size)
        self.k = max(5, self.n // 20)
        self.u = self.beta = math.nan
        if self.n > self.k:
            self.u = float(ref[self.n - self.k])
            # the scale is at least the reference's resolution: the top values of an integer-valued signal
            # (repeat_run) tie, their mean excess is ~0, and one step past them would read as p ~ 0
            self.beta = max(float(ref[self.n - self.k:].mean() - self.u), _resolution(ref, self.k), 1e-6)

    def upper(self, x: float) -> float:
        n, k = self.n, self.k
        if n > k and x > self.u:
            return max(k / (n + 1) * math.exp(-(x - self.u) / self.beta), P_FLOOR)  # floored: exp() underflows
        return (1 + n - int(self.ref.searchsorted(x, "left"))) / (n + 1)


def _upper_p(ref: np.ndarray, x: float) -> float:
    """P(ref >= x): the empirical tail, continued beyond the k-th largest reference value by an exponential
    tail fitted to the k largest (mean excess), so that values past the whole reference still rank."""
    return _Tail(ref).upper(x)


class CountTail:
    """A sorted calibration sample with what :func:`tail_count` needs worked out once (a bucket keeps one per
    part: every assessment reads it)."""

    __slots__ = ("arr", "beta", "n", "t", "u", "values")

    def __init__(self, cal: Sequence[float] | np.ndarray) -> None:
        self.arr = np.asarray(cal, dtype=np.float64)
        self.values: list[float] = self.arr.tolist()
        self.n = n = int(self.arr.size)
        self.t, self.u, self.beta = min(n, max(5, n // 20)), math.nan, math.nan
        if n:
            self.u = float(self.arr[n - self.t])
            self.beta = max(float(self.arr[n - self.t:].mean() - self.u), _resolution(self.arr, self.t), 1e-6)

    def count(self, s: float) -> float:
        if self.n == 0:
            return 0.0
        if s <= self.u:
            return self._interp(s)
        return self.t * math.exp(-(s - self.u) / self.beta)

    def _interp(self, s: float) -> float:
        """``np.interp(s, arr, [n, n - 1, ..., 1], left=n)`` for one value, with its arithmetic and its branches
        (numpy's arr_interp: the last point at or below ``s``, its value where ``s`` equals it, else the line to the
        next point), in plain floats: a quarter of the time for the one value an assessment asks per part."""
        xs, n = self.values, self.n
        j = bisect.bisect_right(xs, s) - 1  # xs[j] <= s < xs[j + 1]: numpy's binary search on sorted points
        if j < 0:
            return float(n)
        y = float(n - j)
        if j == n - 1 or xs[j] == s:
            return y
        slope = -1.0 / (xs[j + 1] - xs[j])  # numpy: (y[j + 1] - y[j]) / (x[j + 1] - x[j]), y[j + 1] - y[j] = -1 exactly
        r = slope * (s - xs[j]) + y
        if math.isnan(r):  # numpy's fallback: the line from the other end
            r = slope * (s - xs[j + 1]) + (y - 1.0)
        return r


def tail_count(cal: Sequence[float] | np.ndarray, s: float) -> float:
    """``#{i: cal_i >= s}`` for a sorted calibration sample as a continuous, decreasing function of ``s``: linear
    between consecutive calibration scores (equal to the count at each of them), and where fewer than
    t = max(5, n/20) scores reach ``s``, t exp(-(s - u) / beta) with u the t-th largest score and beta the mean
    excess of the top t over u (an exponential tail, as the signal references use).  It orders texts between
    calibration scores and beyond all of them, where the plain count ties."""
    return CountTail(cal).count(s)


def continuous_p(count: float, n: int) -> float:
    """The conformal p-value ``(1 + count) / (n + 1)`` of a continuous count, continued below its floor
    ``1 / (n + 1)`` as ``2 count / (n + 1)`` when the count falls under 1 (continuous at 1, 0 at 0)."""
    return max((1.0 + count if count >= 1 else 2.0 * count) / (n + 1), P_FLOOR)


def _tail_p(ref: np.ndarray, x: float, tail: Tail) -> float:
    return _tails_p((_Tail(ref), _Tail(-ref[::-1])), x, tail)


def _tails_p(tails: tuple[_Tail, _Tail], x: float, tail: Tail) -> float:
    hi, lo = tails
    if not math.isfinite(x) or hi.n == 0:
        return 1.0
    if tail == "high":
        return hi.upper(x)
    low = lo.upper(-x)
    if tail == "low":
        return low
    return min(1.0, 2.0 * min(hi.upper(x), low))
