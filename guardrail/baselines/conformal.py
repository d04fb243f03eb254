"""Length-aware split-conformal calibration of one combined decision.

1. **Reference** (train split): per length bucket, the sorted values of each signal.  A new text's signal
   gets a tail p-value from that empirical distribution: ``high`` ``(1 + #{ref >= x}) / (n + 1)``, ``low``
   the mirror, ``both`` twice the smaller tail (capped at 1) -- alpha is split between the two tails.
   Beyond the k-th most extreme reference value (k = max(5, n/20)) the tail continues as an exponential
   fitted to those k values, so that a value far past everything seen still ranks above one just past it
   (an empirical p-value alone would floor at 1/(n+1) and tie every extreme text).  These p-values only
   rank texts; the guarantee comes from step 3.
2. **Combined score** ``S = max_j -log p_j``: the most extreme signal, in one number.
3. **Calibration** (calib split, disjoint from train): per length bucket (Mondrian conformal), the sorted
   ``S`` of benign units.  Flag when ``S > S_(k)``, ``k = ceil((n + 1)(1 - alpha))``: for a benign text
   exchangeable with the calibration units the flag rate is <= alpha.  This needs ``n >= ceil(1/alpha) - 1``
   units per bucket; fitting refuses below that, saying the minimum.  The conformal p-value of a text is
   ``(1 + #{S_i >= S}) / (n + 1)``.

Length buckets: the max over more windows grows with length, so units are bucketed by scored-token count;
edges are quantiles of the training lengths, as many buckets (<= 4) as the calibration split can fill.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ..errors import ConfigError
from .features import Tail

__all__ = ["Assessment", "Bucket", "Calibrator", "fit_calibrator", "min_n"]


def min_n(alpha: float) -> int:
    """Smallest calibration sample for which a split-conformal threshold at ``alpha`` exists."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lo: int  # scored-token count range [lo, hi); hi None = unbounded
    hi: int | None
    reference: dict[str, list[float]]  # signal -> sorted train values
    calib: list[float]  # sorted combined scores of the calibration units
    _arrays: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)

    def ref(self, signal: str) -> np.ndarray:
        arr = self._arrays.get(signal)
        if arr is None:
            arr = self._arrays[signal] = np.asarray(self.reference[signal], dtype=np.float64)
        return arr

    def contains(self, n: int) -> bool:
        return n >= self.lo and (self.hi is None or n < self.hi)


class Assessment(BaseModel):
    flag: bool
    alpha: float
    p_value: float  # conformal p-value of the combined score within its length bucket
    score: float  # combined score S
    threshold: float
    bucket: int
    signal_p: dict[str, float]
    top_signal: str


P_FLOOR = 1e-300  # smallest p-value reported: -log p <= 690.8


def _resolution(ref: np.ndarray, k: int) -> float:
    """Smallest gap between distinct values among the reference's top k + 1 distinct values (0 if one)."""
    top = np.unique(ref[-(4 * k + 1):])[-(k + 1):]
    return float(np.diff(top).min()) if top.size > 1 else 0.0


def _upper_p(ref: np.ndarray, x: float) -> float:
    """P(ref >= x): the empirical tail, continued beyond the k-th largest reference value by an exponential
    tail fitted to the k largest (mean excess), so that values past the whole reference still rank."""
    n = ref.size
    k = max(5, n // 20)
    if n > k and x > ref[n - k]:
        u = ref[n - k]
        # the scale is at least the reference's resolution: the top values of an integer-valued signal
        # (repeat_run) tie, their mean excess is ~0, and one step past them would read as p ~ 0
        beta = max(float(ref[n - k :].mean() - u), _resolution(ref, k), 1e-6)
        return max(k / (n + 1) * math.exp(-(x - u) / beta), P_FLOOR)  # floored: exp() underflows to 0
    return (1 + n - int(np.searchsorted(ref, x, "left"))) / (n + 1)


def _tail_p(ref: np.ndarray, x: float, tail: Tail) -> float:
    if not math.isfinite(x) or ref.size == 0:
        return 1.0
    if tail == "high":
        return _upper_p(ref, x)
    lo = _upper_p(-ref[::-1], -x)
    if tail == "low":
        return lo
    return min(1.0, 2.0 * min(_upper_p(ref, x), lo))


class Calibrator(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signals: dict[str, Tail]
    buckets: list[Bucket]

    def bucket_of(self, n_scored: float) -> int:
        n = int(n_scored)
        for i, b in enumerate(self.buckets):
            if b.contains(n):
                return i
        return len(self.buckets) - 1

    def signal_pvalues(self, feat: Mapping[str, float], bucket: int) -> dict[str, float]:
        b = self.buckets[bucket]
        return {
            s: _tail_p(b.ref(s), float(feat.get(s, float("nan"))), t)
            for s, t in self.signals.items()
        }

    def combined(self, feat: Mapping[str, float], bucket: int) -> tuple[float, dict[str, float]]:
        ps = self.signal_pvalues(feat, bucket)
        return max(-math.log(p) for p in ps.values()), ps

    def threshold(self, bucket: int, alpha: float) -> float:
        cal = self.buckets[bucket].calib
        n = len(cal)
        if n < min_n(alpha):
            raise ConfigError(
                f"alpha={alpha:g} needs at least {min_n(alpha)} calibration units per length bucket; "
                f"bucket {bucket} has {n}"
            )
        k = math.ceil((n + 1) * (1 - alpha))
        return cal[k - 1]

    def assess(self, feat: Mapping[str, float], alpha: float) -> Assessment:
        b = self.bucket_of(feat["n_scored"])
        s, ps = self.combined(feat, b)
        tau = self.threshold(b, alpha)
        cal = self.buckets[b].calib
        n_ge = len(cal) - int(np.searchsorted(cal, s, "left"))
        return Assessment(
            flag=s > tau, alpha=alpha, p_value=(1 + n_ge) / (len(cal) + 1), score=s, threshold=tau,
            bucket=b, signal_p=ps, top_signal=min(ps, key=ps.__getitem__),
        )


def _edges(lengths: np.ndarray, n_buckets: int) -> list[int]:
    qs = np.quantile(lengths, [i / n_buckets for i in range(1, n_buckets)]) if n_buckets > 1 else []
    edges = sorted({round(float(q)) for q in qs})
    return [e for e in edges if e > 0]


def fit_calibrator(
    train: Sequence[Mapping[str, float]],
    calib: Sequence[Mapping[str, float]],
    signals: Mapping[str, Tail],
    alpha_min: float,
    max_buckets: int = 4,
) -> Calibrator:
    need = min_n(alpha_min)
    if len(calib) < need:
        raise ConfigError(
            f"calibration split has {len(calib)} units; alpha={alpha_min:g} needs at least {need} "
            f"(and the train split as many again): give a larger corpus or a larger alpha"
        )
    if len(train) < 10:
        raise ConfigError(f"train split has {len(train)} units; at least 10 are needed")
    t_len = np.array([f["n_scored"] for f in train])
    c_len = np.array([f["n_scored"] for f in calib])
    for nb in range(max_buckets, 0, -1):
        edges = _edges(t_len, nb)
        bounds = [0, *edges, None]
        ranges = list(itertools.pairwise(bounds))

        def members(lens, lo, hi):
            return (lens >= lo) & (lens < hi if hi is not None else True)

        if all(members(c_len, lo, hi).sum() >= need and members(t_len, lo, hi).sum() >= 10 for lo, hi in ranges):
            break
    buckets = []
    for lo, hi in ranges:
        ref = {s: sorted(float(f[s]) for f, m in zip(train, members(t_len, lo, hi), strict=True)
                         if m and math.isfinite(f.get(s, float("nan"))))
               for s in signals}
        buckets.append(Bucket(lo=lo, hi=hi, reference=ref, calib=[]))
    cal = Calibrator(signals=dict(signals), buckets=buckets)
    per_bucket: list[list[float]] = [[] for _ in buckets]
    for f in calib:
        b = cal.bucket_of(f["n_scored"])
        per_bucket[b].append(cal.combined(f, b)[0])
    for b, scores in zip(cal.buckets, per_bucket, strict=True):
        b.calib = sorted(scores)
    return cal
