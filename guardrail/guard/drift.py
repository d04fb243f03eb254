"""Drift of live traffic from a baseline: a test martingale over *online* conformal p-values (pure, seedable).

Why online.  The p-value a baseline gives a text compares its combined score with one fixed calibration sample;
the p-values of many texts then share that sample and are not independent, so a martingale over them has no
unconditional false-alarm bound (conditional on the calibration sample, their distribution is not uniform: a
calibration sample that happened to run low makes every later p-value small).  This monitor computes its own
p-values instead: each observed text's score is ranked among the calibration scores *and every earlier text's*
in the same length bucket, ties broken at random (the smoothed conformal p-value), and then joins them.  If the
calibration texts and the traffic are exchangeable -- traffic like what the baseline was calibrated on -- these
p-values are independent and uniform (Vovk, Nouretdinov & Gammerman 2003, "Testing exchangeability on-line";
per length bucket: Mondrian), so the mixture power martingale ``M_n = ∫_0^1 Π_i ε p_i^(ε-1) dε`` is a test
martingale and by Ville's inequality ``P(M ever reaches c) <= 1/c``: an alarm at 100 is a false alarm with
probability at most 1 %, however long the traffic is watched.

The score is the text's combined score against the calibrator's first part (``Assessment.monitor_score``): a fixed
function, whose calibration units (that part's fold) were not used to fit it -- exchangeable with new texts under
the null.  After an alarm the monitor reports it (``alarms``) and restarts its martingale (the ranks keep their
history: the next alarm has the same guarantee, counted from the restart).  Memory: one float per observed text
per bucket; past ``max_history`` observations the history is dropped back to the calibration scores (a restart:
valid again from there).  Each process monitors its own traffic; :class:`DriftBoard` keeps one monitor per
(baseline, side) for every Guard of a process.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections.abc import Sequence

import numpy as np

from ..baselines.verdict import DriftState, Verdict

_LN10 = math.log(10)

__all__ = ["PROCESS_DRIFT", "DriftBoard", "DriftMonitor", "DriftState", "observed"]

_EPS = np.linspace(0.01, 0.99, 99)  # the mixture grid
_LOG_EPS = np.log(_EPS)
_EPS_M1 = _EPS - 1.0


class DriftMonitor:
    def __init__(self, calibration: Sequence[Sequence[float]] = ((),), *, alarm: float = 100.0,
                 seed: int | None = None, max_history: int = 200_000) -> None:
        """``calibration``: per length bucket, the calibration scores the traffic is compared with."""
        if alarm <= 1:
            raise ValueError("the alarm level must be above 1 (Ville: false alarm <= 1 / alarm)")
        self.alarm, self.max_history = alarm, max_history
        self._calibration = [sorted(float(x) for x in c) for c in calibration]
        self._seen = [list(c) for c in self._calibration]
        self._rng = random.Random(seed)
        self._log_m = np.zeros_like(_EPS)  # log of each power martingale
        self.n = 0  # texts observed
        self._since = 0  # texts in the history (since the last drop)
        self.max_log10 = 0.0
        self.alarms: list[int] = []  # the observation counts at which alarms fired

    @classmethod
    def for_calibrator(cls, calibrator, **kw) -> DriftMonitor:
        """A monitor comparing traffic with the first calibration part's scores, per length bucket."""
        return cls([b.calib for b in calibrator.parts[0].buckets], **kw)

    def p_value(self, score: float, bucket: int = 0) -> float:
        """The smoothed conformal p-value of ``score`` among the bucket's calibration and earlier scores (larger
        scores are more extreme); the score then joins them."""
        if self._since >= self.max_history:  # a fresh sequence from the calibration scores, and a fresh martingale
            self._seen, self._since = [list(c) for c in self._calibration], 0
            self._log_m[:] = 0.0
        seen = self._seen[min(bucket, len(self._seen) - 1)]
        lo, hi = bisect.bisect_left(seen, score), bisect.bisect_right(seen, score)
        p = (len(seen) - hi + self._rng.random() * (hi - lo + 1)) / (len(seen) + 1)
        seen.insert(hi, score)
        self._since += 1
        return p

    def observe(self, score: float, bucket: int = 0) -> DriftState:
        """Rank one text's score and feed its p-value to the martingale."""
        p = self.p_value(score, bucket)
        before = len(self.alarms)
        v = self.update(p)
        return DriftState(p_value=p, log10_martingale=round(v, 4), observed=self.n, alarms=len(self.alarms),
                          alarm=len(self.alarms) > before)

    def update(self, p_value: float) -> float:
        """Feed one p-value that is uniform and independent of the earlier ones under the null; returns log10 M
        (0 right after an alarm: the martingale restarts)."""
        p = min(1.0, max(float(p_value), 1e-300))
        self._log_m += _LOG_EPS + _EPS_M1 * math.log(p)
        self.n += 1
        v = self.log10_martingale
        self.max_log10 = max(self.max_log10, v)
        if v >= math.log10(self.alarm):
            self.alarms.append(self.n)
            self._log_m[:] = 0.0
        return v

    @property
    def log10_martingale(self) -> float:
        """log10 of the mixture (the mean over the grid of the power martingales), since the last restart."""
        top = float(np.maximum.reduce(self._log_m))  # = .max(), .sum() without their Python wrappers
        return (top + math.log(float(np.add.reduce(np.exp(self._log_m - top))) / _EPS.size)) / _LN10  # = .mean()

    @property
    def alarmed(self) -> bool:
        return bool(self.alarms)

    @property
    def alarmed_at(self) -> int | None:
        """The observation count of the first alarm."""
        return self.alarms[0] if self.alarms else None


class DriftBoard:
    """One :class:`DriftMonitor` per (baseline id, side), made on first use, shared by the Guards of a process."""

    def __init__(self, *, alarm: float = 100.0, seed: int | None = None) -> None:
        self.alarm, self.seed = alarm, seed
        self._monitors: dict[tuple[str, str], DriftMonitor] = {}
        self._lock = threading.Lock()  # the sync façade runs Guards from worker threads

    def observe(self, baseline, side: str, score: float, bucket: int) -> DriftState:
        with self._lock:
            key = (baseline.id, side)
            mon = self._monitors.get(key)
            if mon is None:
                mon = self._monitors[key] = DriftMonitor.for_calibrator(baseline.calibrator, alarm=self.alarm,
                                                                        seed=self.seed)
            return mon.observe(score, bucket)

    def monitors(self) -> dict[tuple[str, str], DriftMonitor]:
        with self._lock:
            return dict(self._monitors)


PROCESS_DRIFT = DriftBoard()  # the Guards of a process share it unless given their own


def observed(board: DriftBoard | None, baseline, v: Verdict) -> Verdict:
    """``v`` with its drift state, once its text was ranked by ``baseline``'s monitor (unscorable: as it is)."""
    if board is not None and v.monitor_point is not None:
        bucket, score = v.monitor_point
        v.drift = board.observe(baseline, v.side, score, bucket)
    return v
