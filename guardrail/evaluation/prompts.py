"""``guardrail eval prompts``: ours and the published comparators on labelled prompts, one scorer for all.

Ours is the shipped prompt-side baseline's decision at ``alpha``; records whose group was in the training data
of the baseline or of the comparators' reference are dropped and counted.  Every method gets the threshold-free
figures (AUROC, AUPRC, TPR at fixed FPR over the negatives, bootstrap intervals); at its operating threshold,
the flag rate per label, the TPR per group and the localisation of what it flags.  ``<name>_recal`` is a
comparator at the threshold that gives it FPR = alpha on this run's own negatives (an oracle choice, in its
favour).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..backends.base import Backend
from ..baselines.features import features
from ..baselines.model import Baseline
from ..batch import score_texts
from ..cache import ScoreCache
from ..scoring import TokenArrays
from ..types import Side
from .data import EvalRecord, LabelSpec, drop_trained
from .methods import (
    CPDOnline,
    Guardrail,
    Item,
    JainWindow,
    Method,
    NemoLengthPPL,
    NemoPrefixSuffix,
    WholePPL,
    nemo_parts,
)
from .metrics import roc_curve, summary, threshold_at_fpr
from .reference import Reference

__all__ = ["EvalRun", "eval_prompts", "localisation", "operating"]


@dataclass
class EvalRun:
    doc: dict
    scores: dict[str, np.ndarray]  # per method (base names), aligned with ``records``
    records: list[EvalRecord]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # ROC (fpr, tpr) per method


def comparators(ref: Reference) -> list[Method]:
    return [WholePPL(ref.whole_ppl_threshold), JainWindow(ref.jain_threshold), NemoLengthPPL(), NemoPrefixSuffix(),
            CPDOnline(ref.cpd_mu, ref.cpd_sigma)]


def localisation(flagged: Sequence[Sequence[tuple[int, int]]], truth: Sequence[tuple[int, int]]) -> dict:
    """Per prompt: share of flagged characters inside the true span (precision), share of the span covered
    (recall), any overlap; averaged over the prompts that have flagged characters."""
    prec, rec, ovl = [], [], []
    for spans, (a, b) in zip(flagged, truth, strict=True):
        size = sum(e - s for s, e in spans)
        if size <= 0:
            continue
        inside = sum(max(0, min(e, b) - max(s, a)) for s, e in spans)
        prec.append(inside / size)
        rec.append(inside / (b - a) if b > a else 0.0)
        ovl.append(inside > 0)
    if not prec:
        return {"n": 0, "precision": None, "recall": None, "overlap": None}
    return {"n": len(prec), "precision": round(float(np.mean(prec)), 4), "recall": round(float(np.mean(rec)), 4),
            "overlap": round(float(np.mean(ovl)), 4)}


def operating(flags: np.ndarray, threshold: float | None, rule: str, recs: list[EvalRecord], labels: LabelSpec,
              spans_of: Callable[[int], list[tuple[int, int]]]) -> dict:
    """Figures at a method's operating threshold: flag rate per label, TPR per group, localisation."""
    out: dict = {"threshold": None if threshold is None or not math.isfinite(threshold) else round(threshold, 6),
                 "threshold_rule": rule}
    by_label: dict[str, list[bool]] = {}
    groups: dict[str, list[bool]] = {}
    for r, f in zip(recs, flags.tolist(), strict=True):
        by_label.setdefault(r.label, []).append(f)
        if r.group_value is not None and labels.y(r.label) == 1:
            groups.setdefault(r.group_value, []).append(f)
    out["flag_rate"] = {k: round(float(np.mean(v)), 6) for k, v in sorted(by_label.items())}
    out["by_group"] = {k: {"n": len(v), "tpr": round(float(np.mean(v)), 6)} for k, v in sorted(groups.items())}
    idx = [i for i, r in enumerate(recs) if r.span is not None and labels.y(r.label) == 1 and flags[i]]
    out["localisation"] = localisation([spans_of(i) for i in idx], [recs[i].span for i in idx])  # type: ignore[misc]
    return out


async def eval_prompts(
    backend: Backend, records: list[EvalRecord], labels: LabelSpec, baseline: Baseline, ref: Reference, *,
    alpha: float = 0.01, cache: ScoreCache | None = None, progress: Callable[[int], None] | None = None,
    n_boot: int = 1000, seed: int = 0,
) -> EvalRun:
    trained = set(baseline.training_groups) | set(ref.training_groups)
    recs, n_dropped = drop_trained(records, trained)
    parts = [nemo_parts(r.text) for r in recs]
    texts = [r.text for r in recs] + [t for p in parts if p for _, t in p.values()]
    segs = await score_texts(backend, texts, side=Side.PROMPT, cache=cache, errors="skip", progress=progress)
    seg_of = dict(zip(texts, segs, strict=True))
    items: list[Item] = []
    kept: list[EvalRecord] = []
    for r, p in zip(recs, parts, strict=True):
        seg = seg_of[r.text]
        feats = features(seg, baseline.widths) if seg is not None else None
        if seg is None or feats is None:
            continue
        sub = {k: (span, TokenArrays.from_segment(s)) for k, (span, t) in (p or {}).items()
               if (s := seg_of.get(t)) is not None}
        items.append(Item(r.text, TokenArrays.from_segment(seg), feats, sub))
        kept.append(r)
    y = np.array([-1 if labels.y(r.label) is None else labels.y(r.label) for r in kept])
    if not ({0, 1} <= set(y.tolist())):
        from ..errors import InputError

        raise InputError("after dropping training records and unscorable texts, one class is empty")
    ours = Guardrail(baseline, alpha)
    methods: dict = {}
    scores: dict[str, np.ndarray] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    mask = y >= 0
    for m in [ours, *comparators(ref)]:
        s = np.array([m.score(it) for it in items], dtype=np.float64)
        n_nan = int(np.isnan(s).sum())
        s = np.where(np.isnan(s), -np.inf, s)  # unscorable for this method: never flagged (fail-open)
        scores[m.name] = s
        figs = summary(np.where(np.isinf(s), np.finfo(float).min, s)[mask], y[mask], n_boot=n_boot, seed=seed)
        curves[m.name] = roc_curve(np.where(np.isinf(s), np.finfo(float).min, s)[mask], y[mask])
        figs["n_unscorable"] = n_nan
        if m is ours:
            flags = np.array([ours.decide(it)[0] for it in items])
            op = operating(flags, None, f"shipped baseline {baseline.id} at alpha={alpha:g} (per length "
                            "bucket)", kept, labels, lambda i: ours.spans(items[i], 0.0))
            methods[m.name] = {**figs, **op}
            continue
        for variant, thr, rule in (
            (m.name, m.published, "published"),
            (f"{m.name}_recal", threshold_at_fpr(s[y == 0], alpha), f"FPR={alpha:g} on this run's negatives"),
        ):
            if thr is None:
                continue
            flags = m.flags(s, thr)
            op = operating(flags, thr, rule, kept, labels,
                            lambda i, m=m, thr=thr: m.spans(items[i], thr))
            methods[variant] = {**figs, **op}
    counts: dict[str, int] = {}
    for r in kept:
        counts[r.label] = counts.get(r.label, 0) + 1
    doc = {
        "command": "eval prompts", "scorer": backend.scorer.report(), "baseline": baseline.id, "alpha": alpha,
        "reference": {k: v for k, v in ref.model_dump().items() if k not in ("training_groups", "sources")},
        "n": len(kept), "n_dropped_training": n_dropped, "n_unscorable": len(recs) - len(kept),
        "counts": dict(sorted(counts.items())), "n_boot": n_boot, "seed": seed, "methods": methods,
    }
    return EvalRun(doc=doc, scores=scores, records=kept, curves=curves)
