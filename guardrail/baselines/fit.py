"""Fitting a baseline from units, and measuring its realised flag rate on held-back units."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..backends.base import Backend
from ..batch import score_texts
from ..cache import ScoreCache
from ..types import Side
from .conformal import fit_calibrator
from .corpus import Unit
from .features import Tail, features, tail_of
from .model import Baseline, RateReport
from .splits import Split, group_hash, split_of

__all__ = [
    "DEFAULT_SIGNALS", "DEFAULT_WIDTHS", "binomial_interval", "featurize", "files_sha256", "fit_baseline",
    "flag_rate", "split_units",
]

DEFAULT_WIDTHS = (8, 16, 32)
DEFAULT_SIGNALS: tuple[str, ...] = ("max_w8", "max_w32", "min_w16", "whole_nll", "distinct")


def split_units(units: Sequence[Unit]) -> dict[Split, list[Unit]]:
    out: dict[Split, list[Unit]] = {"train": [], "calib": [], "test": []}
    for u in units:
        out[split_of(u.group)].append(u)
    return out


def files_sha256(paths: Sequence[str | Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(str(p) for p in paths):
        h.update(Path(p).read_bytes())
    return h.hexdigest()


async def featurize(
    backend: Backend, texts: Sequence[str], side: Side, widths: Sequence[int], cache: ScoreCache | None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float] | None]:
    segs = await score_texts(backend, texts, side=side, cache=cache, progress=progress, errors="skip")
    return [None if s is None else features(s, widths) for s in segs]


def binomial_interval(k: int, n: int, level: float = 0.99) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a rate k/n."""
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def flag_rate(b: Baseline, feats: Sequence[Mapping[str, float] | None], alpha: float) -> RateReport:
    ok = [f for f in feats if f is not None]
    flags = sum(b.assess(dict(f), alpha).flag for f in ok)
    return RateReport(alpha=alpha, n=len(ok), flags=flags, flag_rate=flags / len(ok) if ok else math.nan)


async def fit_baseline(
    backend: Backend,
    units: Sequence[Unit],
    *,
    domain: str,
    side: Side,
    alphas: Sequence[float] = (0.01, 0.05),
    widths: Sequence[int] = DEFAULT_WIDTHS,
    signals: Sequence[str] = DEFAULT_SIGNALS,
    unit: Mapping[str, object],
    corpus: Mapping[str, object],
    cache: ScoreCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Baseline, dict[Split, list[dict[str, float] | None]]]:
    """Fit on the train and calib splits of ``units``; report flag rates on the test split."""
    by = split_units(units)
    feats: dict[Split, list[dict[str, float] | None]] = {}
    for name in ("train", "calib", "test"):
        feats[name] = await featurize(backend, [u.text for u in by[name]], side, widths, cache, progress)
    tails: dict[str, Tail] = {s: tail_of(s) for s in signals}
    cal = fit_calibrator(
        [f for f in feats["train"] if f], [f for f in feats["calib"] if f], tails, min(alphas)
    )
    s = backend.scorer
    b = Baseline(
        domain=domain, side=side.value, scorer_id=s.id, model=s.model, tokenizer=s.tokenizer,
        logprob_mode=s.logprob_mode.value, widths=list(widths), unit=dict(unit),
        corpus={**corpus, "n_units": {k: len(v) for k, v in by.items()}},
        calibrator=cal, target_alphas=sorted(alphas),
        fit_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        training_groups=sorted({group_hash(u.group) for u in by["train"] + by["calib"]}),
    )
    b.test_rates = [flag_rate(b, feats["test"], a) for a in sorted(alphas)]
    return b, feats
