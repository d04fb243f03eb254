"""Drift of live traffic from a baseline: a conformal test martingale over the p-values a baseline gives.

Under the baseline's own conditions (traffic exchangeable with its calibration texts) conformal p-values are
uniform; a mixture power martingale ``M_n = ∫_0^1 Π_i ε p_i^(ε-1) dε`` then stays small, and by Ville's
inequality ``P(sup_n M_n >= c) <= 1/c``: crossing 100 says "this traffic is not what the baseline was
calibrated on" with a false-alarm chance of at most 1 %, however long it is watched.  Drifted traffic (a new
domain, a changed model, an attack campaign) gives small p-values more often than uniform, and the martingale
grows.  Conformal p-values are discrete, ``(1 + k) / (n + 1)``; each is randomized within its step
(``p - U / (n + 1)``) so that it is uniform under the null.  Pure: no I/O, seedable.
"""

from __future__ import annotations

import math
import random

import numpy as np

__all__ = ["DriftMonitor"]

_EPS = np.linspace(0.01, 0.99, 99)  # the mixture grid
_LOG_EPS = np.log(_EPS)


class DriftMonitor:
    def __init__(self, alarm: float = 100.0, seed: int | None = None) -> None:
        if alarm <= 1:
            raise ValueError("the alarm level must be above 1 (Ville: false alarm <= 1 / alarm)")
        self.alarm = alarm
        self._log_m = np.zeros_like(_EPS)  # log of each power martingale
        self._rng = random.Random(seed)
        self.n = 0
        self.max_log10 = 0.0
        self.alarmed_at: int | None = None

    def update(self, p_value: float, resolution: float | None = None) -> float:
        """Feed one p-value (with its step ``1 / (n + 1)`` to randomize within); returns log10 M."""
        p = float(p_value)
        if resolution:
            p -= self._rng.random() * resolution
        p = min(1.0, max(p, 1e-300))
        self._log_m += _LOG_EPS + (_EPS - 1.0) * math.log(p)
        self.n += 1
        v = self.log10_martingale
        self.max_log10 = max(self.max_log10, v)
        if self.alarmed_at is None and v >= math.log10(self.alarm):
            self.alarmed_at = self.n
        return v

    @property
    def log10_martingale(self) -> float:
        """log10 of the mixture (the mean over the grid of the power martingales)."""
        top = float(self._log_m.max())
        return (top + math.log(float(np.exp(self._log_m - top).mean()))) / math.log(10)

    @property
    def alarmed(self) -> bool:
        return self.alarmed_at is not None
