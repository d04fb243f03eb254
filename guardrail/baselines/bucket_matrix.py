"""Every part's signal p-values for one length bucket at once (pure numpy): what an assessment computes.

A cross-conformal calibrator scores a text against every part (fold) and every signal: K parts x S signals tail
p-values (tails._tails_p), each a search in a sorted reference, a length-trend residual and, past the k-th most
extreme reference value, an exponential tail.  Done one pair at a time in Python that was ~45 calls per text
(~0.5 ms on the request path).  Here the bucket's references are rows of one :class:`CountTable` (row k * S + j:
part k, signal j) and each tail's parameters are vectors, so one text is a handful of array operations:

* empirical tails as counts, ``#{ref >= x}`` and ``#{ref <= x}``: the same integers as
  ``n - searchsorted(ref, x, "left")`` and its mirror;
* the exponential continuation and the two-sided rule of tails._tails_p, term for term;
* the detector signal, a different score per part, from :class:`~guardrail.baselines.detector.DetectorStack`.

Equal to the scalar path (tails._tails_p per signal and part) to the bit: the few exponential tails and the
logarithms are computed with ``math`` as there (property-tested).  The conformal count over each part's
calibration scores is one more CountTable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .detector import Detector, DetectorStack
from .tails import P_FLOOR, CountTail

__all__ = ["BucketMatrix"]


class CountTable:
    """Exact ``#{row_i >= x_i}`` and ``#{row_i <= x_i}`` for many sorted rows, each asked about its own value, in
    two vectorised lookups: the rows' distinct values pooled and sorted (``u``), and per row its count at or
    above each of them; a value's place among ``u`` (one ``searchsorted`` for all rows) reads every row's count.
    Memory: rows x distinct values (int32), at most ``MAX_CELLS``; past it (a baseline fitted on a very large
    corpus) each row is searched on its own instead -- the same counts, one ``searchsorted`` per row."""

    MAX_CELLS = 4_000_000  # 16 MB per table

    def __init__(self, rows: Sequence[np.ndarray], max_cells: int | None = None) -> None:
        self.rows = [np.asarray(r, dtype=np.float64) for r in rows]
        self.n = np.array([r.size for r in self.rows], dtype=np.int64)
        self.u = np.unique(np.concatenate(self.rows or [np.empty(0)]))
        self.u = self.u[~np.isnan(self.u)]
        self.ge: np.ndarray | None = None
        if len(self.rows) * (self.u.size + 1) <= (self.MAX_CELLS if max_cells is None else max_cells):
            # ge[i, j] = #{row_i >= u_j}; the extra last column (j = len(u): x above every value) is 0
            self.ge = np.zeros((len(self.rows), self.u.size + 1), dtype=np.int32)
            for i, r in enumerate(self.rows):
                self.ge[i, :-1] = r.size - np.searchsorted(r, self.u, "left")
        self._rows = np.arange(len(self.rows))

    def at_least(self, x: np.ndarray) -> np.ndarray:
        """Per row i, ``#{row_i >= x_i}`` (0 for NaN)."""
        if self.ge is None:
            return self.n - np.array([r.searchsorted(v, "left") for r, v in zip(self.rows, x.tolist(), strict=True)])
        return self.ge[self._rows, self.u.searchsorted(x, "left")]

    def at_most(self, x: np.ndarray) -> np.ndarray:
        """Per row i, ``#{row_i <= x_i}`` = n_i - #{row_i > x_i} (n_i for NaN: the caller masks it)."""
        if self.ge is None:
            return np.array([r.searchsorted(v, "right") for r, v in zip(self.rows, x.tolist(), strict=True)],
                            dtype=np.int64)
        return self.n - self.ge[self._rows, self.u.searchsorted(x, "right")]


class BucketMatrix:
    """One length bucket of a calibrator, all parts and signals as arrays (made once per calibrator and bucket).

    Row r = k * S + j is part k's reference of signal j.  The upper and the lower tail of every row are computed
    together as one vector of 2R: the upper tail of ``x`` against ``ref``, then the upper tail of ``-x`` against
    ``-ref`` (tails._Tail's mirror), each with its own exponential-tail parameters."""

    def __init__(self, parts: Sequence, bucket: int, signals: Mapping[str, str]) -> None:
        self.signals = list(signals)
        self.k_parts, s = len(parts), len(self.signals)
        buckets = [p.buckets[bucket] for p in parts]
        tails = [b.tails(sig) for b in buckets for sig in self.signals]  # (upper, lower) _Tail per row
        self.refs = CountTable([hi.ref for hi, _ in tails])
        both = [hi for hi, _ in tails] + [lo for _, lo in tails]
        self.n1 = np.array([t.n + 1 for t in both], dtype=np.float64)
        self.scale = np.array([t.k for t in both], dtype=np.float64) / self.n1
        self.u = np.array([t.u for t in both])  # NaN where the reference has no exponential tail (n <= k)
        self.beta = np.array([t.beta for t in both])
        self.scale_l, self.u_l, self.beta_l = self.scale.tolist(), self.u.tolist(), self.beta.tolist()
        trend = [b.trend.get(sig, (0.0, 0.0)) for b in buckets for sig in self.signals]
        self.ta = np.array([t[0] for t in trend], dtype=np.float64)
        self.tb = np.array([t[1] for t in trend], dtype=np.float64)
        self.trended = bool(np.any(self.ta != 0) or np.any(self.tb != 0))  # none: the residual is the value
        kinds = [signals[sig] for sig in self.signals] * self.k_parts
        # p = min(1, c * min(p_hi + off_hi, p_lo + off_lo)): a one-sided row ignores the other tail (off = inf),
        # a two-sided one doubles the smaller (c = 2)
        self.off_hi = np.array([math.inf if k == "low" else 0.0 for k in kinds])
        self.off_lo = np.array([math.inf if k == "high" else 0.0 for k in kinds])
        self.c = np.array([2.0 if k == "both" else 1.0 for k in kinds])
        self.empty = np.array([hi.n == 0 for hi, _ in tails])
        self.det = self.signals.index("detector") if "detector" in self.signals else None
        dets: list[Detector | None] = [p.detector for p in parts] if self.det is not None else []
        self.stack = DetectorStack(dets) if any(dets) else None  # none: the text's own "detector" value, if any
        self.det_rows = np.arange(self.k_parts) * s + self.det if self.det is not None else None
        self.cal = CountTable([b.calib_array() for b in buckets])
        self.n_cal = int(self.cal.n.sum())  # calibration units in the bucket, over all parts
        self.cal_tails: list[CountTail] = [b.calib_tail() for b in buckets]

    def p_values(self, feat: Mapping[str, float]) -> np.ndarray:
        """(K, S): signal j's tail p-value against part k (1 where the value is missing or the reference empty)."""
        nan = math.nan
        x = np.array([feat.get(sig, nan) for sig in self.signals] * self.k_parts, dtype=np.float64)
        if self.stack is not None:
            x[self.det_rows] = self.stack.scores(feat)
        # Bucket.residual (x - 0 = x without a trend)
        r = x - (self.ta + self.tb * math.log(max(1.0, feat["n_scored"]))) if self.trended else x
        rr = np.concatenate((r, -r))
        counts = np.concatenate((self.refs.at_least(r), self.refs.at_most(r)))  # #{ref >= x}, #{-ref >= -x}
        p2 = (1 + counts) / self.n1
        # past the k-th most extreme reference value, the exponential tail -- with math.exp, as tails._Tail computes
        # it (numpy's exp may differ in the last bit on some CPUs; the stored calibration scores came from math's)
        for i in (rr > self.u).nonzero()[0].tolist():
            p2[i] = max(self.scale_l[i] * math.exp(-(float(rr[i]) - self.u_l[i]) / self.beta_l[i]), P_FLOOR)
        n = r.size
        p = np.minimum(1.0, self.c * np.minimum(p2[:n] + self.off_hi, p2[n:] + self.off_lo))
        p[~np.isfinite(r) | self.empty] = 1.0
        return p.reshape(self.k_parts, len(self.signals))

    def combined(self, p: np.ndarray) -> np.ndarray:
        """Each part's combined score ``S_k = max_j -log p_kj = -log min_j p_kj`` (math.log, as at fitting)."""
        return np.array([-math.log(v) for v in p.min(axis=1).tolist()])

    def n_at_least(self, scores: np.ndarray) -> int:
        """``sum_k #{i in part k's calibration: S_i >= S_k}``."""
        return int(self.cal.at_least(scores).sum())

    def continuous_count(self, scores: np.ndarray) -> float:
        """``sum_k tail_count(cal_k, S_k)``."""
        return sum(t.count(s) for t, s in zip(self.cal_tails, scores.tolist(), strict=True))
