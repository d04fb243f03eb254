"""Multivariate detector over the feature vector, stored as JSON parameters (no pickle).

* ``robust_cov`` (one-class, benign data only): scikit-learn's Minimum Covariance Determinant on standardized
  features; the score is the robust Mahalanobis distance.  Catches texts whose *combination* of signals is
  unusual even when no single signal is extreme.
* ``logistic`` (supervised, when labelled attacks are given): logistic regression benign vs attack on the
  same standardized features; the score is the log-odds of "attack".

Either score becomes one more signal (``detector``, high tail) of the baseline's calibrator, so the combined
decision stays calibrated to alpha by the same split-conformal step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr

from ..errors import ConfigError

__all__ = ["DETECTOR_FEATURES", "Detector", "DetectorStack", "fit_detector", "min_detector_units"]

DETECTOR_FEATURES = (
    "max_w8", "max_w16", "max_w32", "min_w8", "min_w16", "whole_nll", "bits_per_byte", "mean_entropy",
    "distinct", "spike_frac", "excluded_frac", "repeat_run", "surprise_cusum", "log_len",
)


def min_detector_units(features: Sequence[str] = DETECTOR_FEATURES) -> int:
    return 5 * len(features)


def _vector(feat: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    nan = math.nan
    v = np.array([feat.get(n, nan) for n in names], dtype=np.float64)
    if "log_len" in names:
        v[names.index("log_len")] = math.log(max(1.0, feat["n_scored"]))
    return v


class Detector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["robust_cov", "logistic"]
    features: list[str]
    mean: list[float]
    scale: list[float]
    location: list[float] = []  # robust_cov
    precision: list[list[float]] = []  # robust_cov
    coef: list[float] = []  # logistic
    intercept: float = 0.0
    _arrs: dict = PrivateAttr(default_factory=dict)

    def missing(self, feat: Mapping[str, float]) -> list[str]:
        """Inputs with no finite value: the score treats them as typical (z = 0); the assessment lists them."""
        v = _vector(feat, self.features)
        return [n for n, x in zip(self.features, v.tolist(), strict=True) if not math.isfinite(x)]

    def _np(self) -> dict[str, np.ndarray]:
        """The parameters as arrays, made once (every assessment scores against every part's detector)."""
        arrs = self.__pydantic_private__["_arrs"]  # type: ignore[index]
        if not arrs:
            arrs.update({k: np.asarray(getattr(self, k), dtype=np.float64)
                         for k in ("mean", "scale", "location", "precision", "coef")})
        return arrs

    def score(self, feat: Mapping[str, float]) -> float:
        a = self._np()
        x = (_vector(feat, self.features) - a["mean"]) / a["scale"]
        x = np.where(np.isfinite(x), x, 0.0)  # an unknown feature counts as typical
        if self.kind == "robust_cov":
            d = x - a["location"]
            return float(math.sqrt(max(0.0, d @ a["precision"] @ d)))
        return float(x @ a["coef"] + self.intercept)


class DetectorStack:
    """Several detectors' :meth:`Detector.score` at once (a cross-conformal calibrator's parts each hold one,
    fitted together: same kind and inputs): the standardisation stacked, the products part by part -- the same
    arithmetic as Detector.score, to the bit.  Detectors that differ are scored one by one; a part without one
    reads the text's own ``detector`` value as Part.augment does (NaN when it has none)."""

    def __init__(self, detectors: Sequence[Detector | None]) -> None:
        self.detectors = list(detectors)
        d0 = self.detectors[0]
        self.same = d0 is not None and all(
            d is not None and d.kind == d0.kind and d.features == d0.features for d in self.detectors)
        if not self.same:
            return
        self.kind, self.names = d0.kind, d0.features
        arr = lambda k: np.array([getattr(d, k) for d in self.detectors], dtype=np.float64)  # noqa: E731
        self.mean, self.scale = arr("mean"), arr("scale")
        if self.kind == "robust_cov":
            self.location = arr("location")

    def scores(self, feat: Mapping[str, float]) -> np.ndarray:
        if not self.same:
            return np.array([d.score(feat) if d is not None else feat.get("detector", math.nan)
                             for d in self.detectors], dtype=np.float64)
        x = (_vector(feat, self.names) - self.mean) / self.scale
        x[~np.isfinite(x)] = 0.0  # an unknown feature counts as typical, as in Detector.score
        # the products part by part with each detector's own arrays, as Detector.score computes them (a stacked
        # einsum adds in another order: the scores would differ in the last bits from the calibration scores the
        # baseline stored, and a tie with one of them could flip a count)
        if self.kind == "robust_cov":
            d = x - self.location
            return np.array([math.sqrt(max(0.0, row.copy() @ det._np()["precision"] @ row.copy()))
                             for row, det in zip(d, self.detectors, strict=True)])
        return np.array([float(row.copy() @ det._np()["coef"] + det.intercept)
                         for row, det in zip(x, self.detectors, strict=True)])


def fit_detector(
    benign: Sequence[Mapping[str, float]],
    attacks: Sequence[Mapping[str, float]] | None = None,
    features: Sequence[str] = DETECTOR_FEATURES,
    seed: int = 0,
) -> Detector:
    from sklearn.covariance import MinCovDet
    from sklearn.linear_model import LogisticRegression

    names = list(features)
    xb = np.vstack([_vector(f, names) for f in benign])
    keep = [i for i in range(len(names)) if np.isfinite(xb[:, i]).all() and xb[:, i].std() > 1e-9]
    if len(benign) < min_detector_units(keep):
        raise ConfigError(f"the detector needs at least {min_detector_units(keep)} benign units, got {len(benign)}")
    names = [names[i] for i in keep]
    xb = xb[:, keep]
    mean, scale = xb.mean(axis=0), xb.std(axis=0)
    zb = (xb - mean) / scale
    r = lambda a: [float(f"{v:.6g}") for v in np.ravel(a)]  # noqa: E731
    if not attacks:
        mcd = MinCovDet(random_state=seed).fit(zb)
        return Detector(kind="robust_cov", features=names, mean=r(mean), scale=r(scale), location=r(mcd.location_),
                        precision=[r(row) for row in mcd.precision_])
    za = (np.vstack([_vector(f, names) for f in attacks]) - mean) / scale
    za = np.where(np.isfinite(za), za, 0.0)
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    clf.fit(np.vstack([zb, za]), np.r_[np.zeros(len(zb)), np.ones(len(za))])
    return Detector(kind="logistic", features=names, mean=r(mean), scale=r(scale), coef=r(clf.coef_[0]),
                    intercept=float(clf.intercept_[0]))
