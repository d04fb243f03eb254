"""Length-aware conformal calibration of one combined decision (split, or cross-conformal by group folds).

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
Within a bucket (the last is unbounded) signals still drift with length: each signal's robust line against
log length is removed (:func:`length_trend`) and the reference holds residuals.

**Cross-conformal** (``method="cross"``, fitted by baselines.fit): with few documents, a calibration split of a
third of them is a small sample of documents, and chunks of one document are not independent -- the
threshold then depends on which dozen documents happened to land in it.  Instead the fitting documents are
split into K group folds, and the calibrator holds K *parts*: part k's reference (and detector) is fitted
without fold k, its calibration scores are fold k's units scored against it.  A new text is scored against
every part, and its p-value is Vovk's cross-conformal one, ``(1 + sum_k #{i in fold k: S_i >= S_k(x)}) /
(n + 1)``, n the fitting units in its length bucket: each comparison is between scores computed against the
same reference, so no reference-size mismatch biases it (a single reference refitted on all units made the
flag rate about a quarter lower than alpha), and every fitting document calibrates.  Its guarantee: at worst
about 2 alpha, about alpha in practice (Vovk 2015; Barber et al. 2021); the realised rate is measured on the
held-back test split either way.  Split conformal is the one-part case.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ..errors import ConfigError
from .bucket_matrix import BucketMatrix
from .detector import Detector
from .features import Tail
from .tails import P_FLOOR, CountTail, _Tail, _tail_p, _tails_p, continuous_p, tail_count  # noqa: F401 (re-exported)

__all__ = [
    "Assessment", "Bucket", "Calibrator", "Part", "continuous_p", "fit_calibrator", "length_ranges", "length_trend",
    "min_n", "reference_part", "tail_count",
]


def min_n(alpha: float) -> int:
    """Smallest calibration sample for which a split-conformal threshold at ``alpha`` exists."""
    return max(1, math.ceil(1.0 / alpha - 1e-9) - 1)


class Bucket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lo: int  # scored-token count range [lo, hi); hi None = unbounded
    hi: int | None
    reference: dict[str, list[float]]  # signal -> sorted train values (residuals where the signal has a trend)
    calib: list[float]  # sorted combined scores of the calibration units
    trend: dict[str, tuple[float, float]] = {}  # signal -> (a, b): value ~ a + b log(n_scored) in this bucket
    _arrays: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)

    def residual(self, signal: str, x: float, n_scored: float) -> float:
        """``x`` with the bucket's length trend of ``signal`` removed (``x`` itself where it has none)."""
        t = self.trend.get(signal)
        return x if t is None else x - (t[0] + t[1] * math.log(max(1.0, n_scored)))

    def calib_array(self) -> np.ndarray:
        """The calibration scores as an array (made once; :meth:`Calibrator.set_calibration` replaces them)."""
        arrays = self.__pydantic_private__["_arrays"]  # type: ignore[index]
        arr = arrays.get("\x00calib")
        if arr is None:
            arr = arrays["\x00calib"] = np.asarray(self.calib, dtype=np.float64)
        return arr

    def calib_tail(self) -> CountTail:
        """The calibration scores' continuous count (tail_count), made once."""
        arrays = self.__pydantic_private__["_arrays"]  # type: ignore[index]
        t = arrays.get("\x00calib_tail")
        if t is None:
            t = arrays["\x00calib_tail"] = CountTail(self.calib_array())
        return t

    def ref(self, signal: str) -> np.ndarray:
        arrays = self.__pydantic_private__["_arrays"]  # type: ignore[index]  # (no pydantic __getattr__ per call)
        arr = arrays.get(signal)
        if arr is None:
            arr = arrays[signal] = np.asarray(self.reference[signal], dtype=np.float64)
        return arr

    def tails(self, signal: str) -> tuple[_Tail, _Tail]:
        """The reference of ``signal`` as upper and lower tails, made once."""
        arrays = self.__pydantic_private__["_arrays"]  # type: ignore[index]
        key = "\x00tails:" + signal
        t = arrays.get(key)
        if t is None:
            ref = self.ref(signal)
            t = arrays[key] = (_Tail(ref), _Tail(-ref[::-1]))
        return t

    def contains(self, n: int) -> bool:
        return n >= self.lo and (self.hi is None or n < self.hi)


@dataclass(slots=True)
class Assessment:
    """One text's assessment by a calibrator (an internal result, one per judged text on the request path: a
    plain dataclass; the report carries the Verdict made from it)."""

    flag: bool
    alpha: float
    p_value: float  # conformal p-value of the combined score within its length bucket
    score: float  # combined score S (cross-conformal: the mean over folds)
    threshold: float | None  # split conformal: flag when score > threshold; cross: no single threshold
    bucket: int
    signal_p: dict[str, float]
    top_signal: str
    beyond_fitted_length: bool = False  # longer than any fitting unit: outside what the thresholds were fitted on
    resolution: float = 0.0  # smallest p-value this bucket can give: 1 / (n + 1)
    # signals (and detector inputs, as "detector:<feature>") with no value for this text: they took no part in
    # the decision (their p-value reads 1); the caller's policy decides whether that fails open or closed
    missing: list[str] = field(default_factory=list)
    monitor_score: float = 0.0  # the combined score against the first part alone: one fixed function of the text,
    # what the drift monitor ranks (guard/drift.py)
    tail_p: float = 1.0  # p_value made continuous (see tail_count, continuous_p): equal to it at calibration scores,
    # interpolated between them, continued below its floor: a ranking, not a guarantee


class Part(BaseModel):
    """One reference (per length bucket, with the detector fitted on the same units) and the combined scores of
    the calibration units computed against it.  Split conformal has one part; cross-conformal one per fold."""

    model_config = ConfigDict(extra="forbid")

    detector: Detector | None = None  # when set, its score is the "detector" signal
    buckets: list[Bucket]

    def augment(self, feat: Mapping[str, float]) -> Mapping[str, float]:
        return {**feat, "detector": self.detector.score(feat)} if self.detector is not None else feat


class Calibrator(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signals: dict[str, Tail]
    parts: list[Part]
    method: Literal["split", "cross"] = "split"  # how the calibration scores were obtained (see module doc)
    max_len: int | None = None  # longest fitting unit (scored tokens)
    _bounds: dict = PrivateAttr(default_factory=dict)  # stream_bounds.stream_bounds: per cut-off, made once
    _matrices: dict = PrivateAttr(default_factory=dict)  # Calibrator._made: per bucket its BucketMatrix; the inputs

    @property
    def buckets(self) -> list[Bucket]:
        """The buckets of the first part (every part has the same length ranges)."""
        return self.parts[0].buckets

    @property
    def inputs(self) -> frozenset[str]:
        """The features an assessment reads: the signals and every part's detector inputs (each fold's detector
        drops the inputs that were constant in its own fitting units, so the lists may differ).  Made once per
        set of detectors."""
        dets = [pt.detector for pt in self.parts]
        return self._made("inputs", dets, lambda: frozenset(s for s in self.signals if s != "detector") | frozenset(
            f for d in dets if d is not None for f in d.features))

    def missing(self, feat: Mapping[str, float]) -> list[str]:
        """The signals this text has no finite value for, and the detector's inputs it lacks."""
        out = [s for s in self.signals if s != "detector" and not math.isfinite(float(feat.get(s, math.nan)))]
        det = self.parts[0].detector
        if det is not None:
            out += [f"detector:{f}" for f in det.missing(feat)]
        return out

    def bucket_of(self, n_scored: float) -> int:
        n = int(n_scored)
        for i, b in enumerate(self.buckets):
            if b.contains(n):
                return i
        return len(self.buckets) - 1

    def n_calib(self, bucket: int) -> int:
        return sum(len(p.buckets[bucket].calib) for p in self.parts)

    def matrix(self, bucket: int) -> BucketMatrix:
        """The bucket's references and calibration scores over all parts as arrays (made once per bucket)."""
        return self._made(bucket, [x for pt in self.parts for x in (pt.buckets[bucket], pt.detector)],
                          lambda: BucketMatrix(self.parts, bucket, self.signals))

    def _made(self, name, sources: list, make):
        """``make()``, kept under ``name`` while the objects it was made from are these very ones: a replaced
        detector or bucket (or a copy of this calibrator sharing the cache with other parts) makes it again;
        set_calibration empties the cache.  The entry holds ``sources``, so their ids cannot be reused while it
        lives."""
        made = self.__pydantic_private__["_matrices"]  # type: ignore[index]  # (no pydantic __getattr__ per call)
        key = tuple(map(id, sources))
        got = made.get(name)
        if got is None or got[0] != key:
            got = made[name] = (key, make(), sources)
        return got[1]

    def combined(self, feat: Mapping[str, float], bucket: int, part: int = 0) -> tuple[float, dict[str, float]]:
        """Combined score S of ``feat`` against one part's reference, and the per-signal p-values."""
        m = self.matrix(bucket)
        p = m.p_values(feat)
        return float(m.combined(p)[part]), dict(zip(self.signals, p[part].tolist(), strict=True))

    def score(self, feat: Mapping[str, float], part: int = 0) -> float:
        """Combined score S of a unit in its own length bucket, against one part's reference."""
        return self.combined(feat, self.bucket_of(feat["n_scored"]), part)[0]

    def set_calibration(self, lengths: Sequence[float], scores: Sequence[float], part: int = 0) -> None:
        """A part's calibration scores, each to the bucket of its unit's length."""
        per: list[list[float]] = [[] for _ in self.buckets]
        for n, sc in zip(lengths, scores, strict=True):
            per[self.bucket_of(n)].append(float(sc))
        for b, sc in zip(self.parts[part].buckets, per, strict=True):
            b.calib = sorted(sc)
            b._arrays.pop("\x00calib", None)
            b._arrays.pop("\x00calib_tail", None)
        self._bounds.clear()
        self._matrices.clear()

    def resolution(self) -> float:
        """The coarsest bucket's smallest p-value, 1 / (n + 1): a tier at a lower p cannot be told apart."""
        return max(1.0 / (self.n_calib(b) + 1) for b in range(len(self.buckets)))

    def _need(self, bucket: int, alpha: float, n: int | None = None) -> int:
        """The bucket's calibration count (``n`` when the caller has it), refused below what ``alpha`` needs."""
        n = self.n_calib(bucket) if n is None else n
        if n < min_n(alpha):
            raise ConfigError(
                f"alpha={alpha:g} needs at least {min_n(alpha)} calibration units per length bucket; "
                f"bucket {bucket} has {n}"
            )
        return n

    def threshold(self, bucket: int, alpha: float) -> float | None:
        """The combined-score threshold of split conformal (flag when S > it); None for cross-conformal, whose
        decision compares each fold's S with that fold's calibration scores (see :meth:`assess`)."""
        return self._threshold(bucket, self._need(bucket, alpha), alpha)

    def _threshold(self, bucket: int, n: int, alpha: float) -> float | None:
        if len(self.parts) > 1:
            return None
        return self.parts[0].buckets[bucket].calib[math.ceil((n + 1) * (1 - alpha)) - 1]

    def assess(self, feat: Mapping[str, float], alpha: float) -> Assessment:
        """The conformal p-value ``(1 + sum_k #{i in part k: S_i >= S_k(x)}) / (n + 1)`` over the parts'
        calibration scores in the text's length bucket (split: one part; cross: Vovk's cross-conformal
        p-value); flag when it is <= alpha (for one part: exactly S > the split-conformal threshold)."""
        b = self.bucket_of(feat["n_scored"])
        m = self.matrix(b)
        n = self._need(b, alpha, m.n_cal)
        p = m.p_values(feat)
        scores = m.combined(p)
        n_ge = m.n_at_least(scores)
        sig_p = np.exp(np.log(p).sum(axis=0) / len(self.parts)).tolist()  # geometric mean over the parts
        signal_p = dict(zip(self.signals, sig_p, strict=True))
        return Assessment(
            flag=1 + n_ge <= alpha * (n + 1) * (1 + 1e-12), alpha=alpha, p_value=(1 + n_ge) / (n + 1),
            resolution=1 / (n + 1), tail_p=continuous_p(m.continuous_count(scores), n),
            score=float(scores.sum()) / scores.size, monitor_score=float(scores[0]), threshold=self._threshold(b, n, alpha),
            bucket=b, signal_p=signal_p, top_signal=m.signals[int(np.argmin(sig_p))],
            missing=self.missing(feat),
            beyond_fitted_length=self.max_len is not None and feat["n_scored"] > self.max_len,
        )


def _edges(lengths: np.ndarray, n_buckets: int) -> list[int]:
    qs = np.quantile(lengths, [i / n_buckets for i in range(1, n_buckets)]) if n_buckets > 1 else []
    edges = sorted({round(float(q)) for q in qs})
    return [e for e in edges if e > 0]


Range = tuple[int, int | None]


def _members(lens: np.ndarray, lo: int, hi: int | None) -> np.ndarray:
    return (lens >= lo) & (lens < hi if hi is not None else True)


def length_ranges(
    ref_lengths: Sequence[float], cal_lengths: Sequence[float], alpha_min: float, max_buckets: int = 4,
    min_ref: int = 10,
) -> list[Range]:
    """Length buckets: as many (<= ``max_buckets``, edges at quantiles of the reference lengths) as leave every
    bucket ``min_n(alpha_min)`` calibration units and ``min_ref`` reference units; refuses below one bucket."""
    need = min_n(alpha_min)
    if len(cal_lengths) < need:
        raise ConfigError(
            f"calibration split has {len(cal_lengths)} units; alpha={alpha_min:g} needs at least {need} "
            f"(and the train split as many again): give a larger corpus or a larger alpha"
        )
    if len(ref_lengths) < min_ref:
        raise ConfigError(f"train split has {len(ref_lengths)} units; at least {min_ref} are needed")
    t_len, c_len = np.asarray(ref_lengths, dtype=float), np.asarray(cal_lengths, dtype=float)
    for nb in range(max_buckets, 0, -1):
        ranges = list(itertools.pairwise([0, *_edges(t_len, nb), None]))
        if all(_members(c_len, lo, hi).sum() >= need and _members(t_len, lo, hi).sum() >= min_ref
               for lo, hi in ranges):
            return ranges
    return [(0, None)]


def length_trend(values: np.ndarray, log_n: np.ndarray, min_units: int = 40) -> tuple[float, float] | None:
    """A robust line ``value ~ a + b log n``: the slope between the medians of the shorter and the longer half
    (breakdown 25 %: a few extreme texts do not tilt it), through the overall medians.  None where the bucket
    is too small or its lengths too alike for a slope to mean anything."""
    if values.size < min_units:
        return None
    order = np.argsort(log_n, kind="stable")
    lo, hi = order[: values.size // 2], order[values.size // 2 :]
    run = float(np.median(log_n[hi]) - np.median(log_n[lo]))
    if run < 0.2:  # the longer half is not even ~22 % longer
        return None
    b = float(np.median(values[hi]) - np.median(values[lo])) / run
    return float(f"{float(np.median(values)) - b * float(np.median(log_n)):.7g}"), float(f"{b:.7g}")


def reference_part(
    train: Sequence[Mapping[str, float]], signals: Mapping[str, Tail], ranges: Sequence[Range],
    detector: Detector | None = None, trend: bool | Collection[str] = True,
) -> Part:
    """A part holding the reference distributions of ``train`` per length range (no calibration scores yet);
    ``detector`` (fitted on the same units) adds its score as the "detector" signal.

    ``trend`` (True, False, or the signals that get one): within a bucket, signals still drift with length (the max over more windows grows, the share
    of distinct tokens falls); each signal's robust line against log length is removed and the reference
    holds the residuals, so a long text in a wide bucket (the last one is unbounded) is compared with texts
    of its own length, and texts past the longest fitting unit are extrapolated along the line."""
    t_len = np.array([f["n_scored"] for f in train])
    part = Part(detector=detector, buckets=[])
    rows = [part.augment(f) for f in train]
    for lo, hi in ranges:
        inside = _members(t_len, lo, hi)
        ref, trends = {}, {}
        for s in signals:
            pairs = [(float(f[s]), math.log(max(1.0, f["n_scored"]))) for f, m in zip(rows, inside, strict=True)
                     if m and math.isfinite(f.get(s, float("nan")))]
            v = np.array([p[0] for p in pairs])
            ln = np.array([p[1] for p in pairs])
            t = length_trend(v, ln) if (trend is True or (trend and s in trend)) else None
            if t is not None:
                trends[s] = t
                v = v - (t[0] + t[1] * ln)
            # 7 significant digits: the file stays small; calibration scores are computed against these values
            ref[s] = sorted(float(f"{x:.7g}") for x in v)
        part.buckets.append(Bucket(lo=lo, hi=hi, reference=ref, calib=[], trend=trends))
    return part


def fit_calibrator(
    train: Sequence[Mapping[str, float]],
    calib: Sequence[Mapping[str, float]],
    signals: Mapping[str, Tail],
    alpha_min: float,
    max_buckets: int = 4,
    detector: Detector | None = None,
    trend: bool | Collection[str] = True,
) -> Calibrator:
    """Split conformal: reference (and ``detector``, fitted on it) from ``train``, thresholds from the combined
    scores of ``calib``."""
    ranges = length_ranges([f["n_scored"] for f in train], [f["n_scored"] for f in calib], alpha_min, max_buckets)
    cal = Calibrator(signals=dict(signals), parts=[reference_part(train, signals, ranges, detector, trend)],
                     max_len=int(max(f["n_scored"] for f in train)))
    cal.set_calibration([f["n_scored"] for f in calib], [cal.score(f) for f in calib])
    return cal
