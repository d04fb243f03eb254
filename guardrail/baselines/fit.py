"""Fitting a baseline from units, and measuring its realised flag rate on held-back units."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Literal

from ..backends.base import Backend, GenerationRequest, Message, ScorerInfo
from ..batch import score_texts
from ..cache import ScoreCache
from ..errors import ConfigError
from ..types import Side
from .conformal import Calibrator, fit_calibrator, length_ranges, reference_part
from .corpus import Unit
from .detector import fit_detector, min_detector_units
from .features import Tail, features, tail_of
from .model import Baseline, RateReport
from .splits import Split, fold_of, group_hash, split_of

__all__ = [
    "DEFAULT_SIGNALS", "DEFAULT_WIDTHS", "binomial_interval", "cross_calibrate", "featurize", "files_sha256", "fit_baseline",
    "fit_from_features", "fit_output_baseline", "flag_rate", "generation_features", "rate_check", "split_units",
]

DEFAULT_WIDTHS = (8, 16, 32)
DEFAULT_SIGNALS: tuple[str, ...] = ("max_w8", "max_w32", "min_w16", "whole_nll", "distinct", "repeat_run", "surprise_cusum")


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


def rate_check(k: int, n: int, alpha: float) -> dict:
    """A realised flag rate k/n against target ``alpha``: within [0.5a, 1.5a] where n is large enough for that
    band to be expected (n >= 1500 at a <= 1 %, >= 300 above), otherwise within the exact 99 % binomial
    interval of Binomial(n, a) -- the check the Baselines issue states."""
    from scipy.stats import binom

    rate = k / n if n else math.nan
    lo, hi = binomial_interval(k, n) if n else (0.0, 1.0)
    band_ok = n >= 1500 if alpha <= 0.01 else n >= 300
    klo, khi = (int(binom.ppf(0.005, n, alpha)), int(binom.ppf(0.995, n, alpha))) if n else (0, 0)
    return {"alpha": alpha, "n": n, "flags": k, "flag_rate": rate, "ci99": [lo, hi],
            "band": [0.5 * alpha, 1.5 * alpha], "band_applies": band_ok, "expected_flags_99": [klo, khi],
            "within": bool(n) and ((0.5 * alpha <= rate <= 1.5 * alpha) if band_ok else (klo <= k <= khi))}


def flag_rate(b: Baseline, feats: Sequence[Mapping[str, float] | None], alpha: float) -> RateReport:
    ok = [f for f in feats if f is not None]
    flags = sum(b.assess(dict(f), alpha).flag for f in ok)
    return RateReport(alpha=alpha, n=len(ok), flags=flags, flag_rate=flags / len(ok) if ok else math.nan)


Feats = list[dict[str, float] | None]
Calibration = Literal["split", "cross"]
FOLDS = 5


def cross_calibrate(
    pool: Sequence[dict[str, float]], groups: Sequence[str], tails: Mapping[str, Tail], alpha_min: float,
    detector: bool, attacks: Sequence[dict[str, float]] | None, k: int, max_buckets: int = 4, trend: bool | Collection[str] = True,
) -> Calibrator:
    """Cross-conformal over group folds of the fitting units (see conformal's module doc): part ``j`` holds a
    reference and detector fitted without fold ``j`` and the scores of fold ``j``'s units against them."""
    folds = [fold_of(g, k) for g in groups]
    ks = sorted(set(folds))
    if len(ks) < 2:
        raise ConfigError(f"cross-conformal calibration needs groups in at least 2 of {k} folds, got {len(ks)}")
    lens = [f["n_scored"] for f in pool]
    # each fold's reference keeps (K-1)/K of a bucket: ask the pool for 10 K/(K-1) units per bucket
    ranges = length_ranges(lens, lens, alpha_min, max_buckets, min_ref=math.ceil(10 * len(ks) / (len(ks) - 1)))
    parts = []
    for fold in ks:
        ref = [f for f, fo in zip(pool, folds, strict=True) if fo != fold]
        parts.append(reference_part(ref, tails, ranges, fit_detector(ref, attacks) if detector else None, trend))
    cal = Calibrator(signals=dict(tails), parts=parts, method="cross", max_len=int(max(lens)))
    for j, fold in enumerate(ks):
        mine = [f for f, fo in zip(pool, folds, strict=True) if fo == fold]
        cal.set_calibration([f["n_scored"] for f in mine], [cal.score(f, j) for f in mine], part=j)
    return cal


def fit_from_features(
    scorer: ScorerInfo,
    feats: Mapping[Split, Feats],
    groups: Mapping[Split, Sequence[str]],
    *,
    domain: str,
    side: Side,
    alphas: Sequence[float],
    widths: Sequence[int],
    signals: Sequence[str],
    unit: Mapping[str, object],
    corpus: Mapping[str, object],
    detector: bool = True,
    attack_feats: Sequence[dict[str, float]] | None = None,
    calibration: Calibration = "cross",
    folds: int = FOLDS,
    max_buckets: int = 4,
    trend: bool | Collection[str] = True,
) -> Baseline:
    """Fit on the units of ``feats['train']`` and ``feats['calib']`` (``groups`` holds each unit's group key,
    in the same order); report flag rates on ``feats['test']``.

    ``calibration="split"``: reference and detector from train, conformal thresholds from calib.
    ``"cross"`` (default): train and calib pooled, cross-conformal over ``folds`` group folds.
    ``max_buckets`` / ``trend``: length buckets of the calibration, and the signals whose line against log
    length is removed within a bucket (see conformal.reference_part); one bucket and no trend suit signals
    that are sums, which short texts cannot accumulate (the prompt side's excess CUSUM)."""
    train = [f for f in feats["train"] if f]
    calib = [f for f in feats["calib"] if f]
    tails: dict[str, Tail] = {s: tail_of(s) for s in signals}
    ref_n = len(train) if calibration == "split" else (len(train) + len(calib)) * (folds - 1) // folds
    notes: list[str] = []
    if detector and ref_n < min_detector_units():
        notes.append(f"detector skipped: it needs at least {min_detector_units()} benign reference units, "
                     f"got {ref_n}")
        detector = False
    if detector:
        tails["detector"] = "high"
    attacks = attack_feats or None
    if calibration == "split":
        det = fit_detector(train, attacks) if detector else None
        cal = fit_calibrator(train, calib, tails, min(alphas), max_buckets, detector=det, trend=trend)
    else:
        pool, pool_groups = [], []
        for name in ("train", "calib"):
            for f, g in zip(feats[name], groups[name], strict=True):
                if f:
                    pool.append(f)
                    pool_groups.append(g)
        cal = cross_calibrate(pool, pool_groups, tails, min(alphas), detector, attacks, folds, max_buckets, trend)
    ks = {f.get("entropy_k") for f in [*train, *calib]}
    b = Baseline(
        entropy_k=int(ks.pop()) if len(ks) == 1 and None not in ks else None,
        domain=domain, side=side.value, scorer_id=scorer.id, model=scorer.model, tokenizer=scorer.tokenizer,
        logprob_mode=scorer.logprob_mode.value, widths=list(widths), unit=dict(unit),
        corpus={**corpus, "n_units": {k: len(v) for k, v in feats.items()}},
        calibrator=cal, target_alphas=sorted(alphas),
        fit_date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        training_groups=sorted({group_hash(g) for name in ("train", "calib") for g in groups[name]}), notes=notes,
    )
    b.test_rates = [flag_rate(b, feats["test"], a) for a in sorted(alphas)]
    return b


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
    detector: bool = True,
    attacks: Sequence[str] = (),
    calibration: Calibration = "cross",
    max_buckets: int = 4,
    trend: bool | Collection[str] = True,
) -> tuple[Baseline, dict[Split, Feats]]:
    """Score ``units`` by teacher forcing and fit on their train and calib splits (see fit_from_features).

    ``detector``: also fit the multivariate detector -- one-class, or supervised when ``attacks`` (texts
    already restricted to training groups by the caller) are given."""
    by = split_units(units)
    feats: dict[Split, Feats] = {}
    for name in ("train", "calib", "test"):
        feats[name] = await featurize(backend, [u.text for u in by[name]], side, widths, cache, progress)
    attack_feats = [f for f in await featurize(backend, list(attacks), side, widths, cache) if f] if attacks else None
    b = fit_from_features(
        backend.text_scorer, feats, {k: [u.group for u in v] for k, v in by.items()}, domain=domain, side=side,
        alphas=alphas, widths=widths, signals=signals, unit=unit, corpus=corpus, detector=detector,
        attack_feats=attack_feats, calibration=calibration, max_buckets=max_buckets, trend=trend,
    )
    return b, feats


async def generation_features(
    backend: Backend, prompts: Sequence[str], *, widths: Sequence[int], max_tokens: int = 128,
    temperature: float = 0.7, seed: int = 0, progress: Callable[[int], None] | None = None, concurrency: int = 8,
) -> Feats:
    """Output-side units: generate an answer to each prompt (seeded per prompt) and take the features of the
    generation's own output logprobs -- what the guard will see at run time.  ``concurrency`` requests at once
    (in the prompts' order in the result)."""
    caps = backend.capabilities
    # entropy signals need the distribution: exact where the backend has it, else the top alternatives (the
    # baseline records k; the Guard asks the serving model for as many)
    top = 0 if caps.exact_entropy else min(5, caps.max_top_k or 5)
    sem = asyncio.Semaphore(concurrency)  # a server batches concurrent requests; the embedded model queues them

    async def one(i: int, prompt: str) -> dict[str, float] | None:
        req = GenerationRequest(messages=[Message(role="user", content=prompt)], max_tokens=max_tokens,
                                temperature=temperature, seed=seed + i, top_logprobs=top)
        async with sem:
            gen = await backend.generate(req)
        if progress:
            progress(1)
        return features(gen.output, widths)

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))


async def fit_output_baseline(
    backend: Backend, prompts: Sequence[str], *, domain: str, alphas: Sequence[float] = (0.01, 0.05),
    widths: Sequence[int] = DEFAULT_WIDTHS, signals: Sequence[str] = DEFAULT_SIGNALS,
    corpus: Mapping[str, object], max_tokens: int = 128, temperature: float = 0.7, seed: int = 0,
    progress: Callable[[int], None] | None = None, calibration: Calibration = "cross",
) -> Baseline:
    """An output-side baseline from generations: prompts split by their text, answers generated and scored."""
    by: dict[Split, list[str]] = {"train": [], "calib": [], "test": []}
    for p in prompts:
        by[split_of(p)].append(p)
    feats: dict[Split, Feats] = {}
    for name in ("train", "calib", "test"):
        feats[name] = await generation_features(backend, by[name], widths=widths, max_tokens=max_tokens,
                                                temperature=temperature, seed=seed, progress=progress)
    unit = {"kind": "generation", "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    return fit_from_features(
        backend.scorer, feats, by, domain=domain, side=Side.OUTPUT, alphas=alphas,
        widths=widths, signals=signals, unit=unit, corpus=corpus, calibration=calibration,
    )
