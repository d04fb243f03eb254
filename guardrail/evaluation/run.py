"""What ``eval prompts`` and ``eval outputs`` share: every method scored over the same items, its
threshold-free figures, and its figures at an operating threshold (flag rate per label, TPR per group,
localisation)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .data import EvalRecord, LabelSpec
from .methods import Guardrail, Item, Method, ranking
from .metrics import reliability, roc_curve, summary, threshold_at_fpr

__all__ = ["EvalRun", "localisation", "operating", "run_methods"]


@dataclass
class EvalRun:
    doc: dict
    scores: dict[str, np.ndarray]  # per method (base names), aligned with ``records``
    records: list[EvalRecord]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # ROC (fpr, tpr) per method


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


def run_methods(
    items: list[Item], recs: list[EvalRecord], labels: LabelSpec, ours: Guardrail, comparators: Sequence[Method], *,
    alpha: float, n_boot: int, seed: int, published: bool, calibration: bool,
) -> tuple[dict, dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Figures of ours (at its baseline's decision) and of each comparator (at its published threshold when
    ``published`` and it has one, and as ``<name>_recal`` at FPR = alpha on these negatives).  With
    ``calibration``, ours' 1 - p-value is checked against the labels (ECE, reliability)."""
    y = np.array([-1 if labels.y(r.label) is None else labels.y(r.label) for r in recs])
    if not {0, 1} <= set(y.tolist()):
        raise InputError("after dropping training records and unscorable texts, one class is empty")
    mask = y >= 0
    assessed = [ours.assess(it) for it in items]  # one assessment per item: score, flag, p-value
    methods: dict = {}
    scores: dict[str, np.ndarray] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in [ours, *comparators]:
        raw = [ranking(a) for a in assessed] if m is ours else [m.score(it) for it in items]
        s = np.array(raw, dtype=np.float64)
        n_nan = int(np.isnan(s).sum())
        s = np.where(np.isnan(s), -np.inf, s)  # unscorable for this method: never flagged (fail-open)
        scores[m.name] = s
        ranked = np.where(np.isinf(s), np.finfo(float).min, s)[mask]
        figs = summary(ranked, y[mask], n_boot=n_boot, seed=seed)
        curves[m.name] = roc_curve(ranked, y[mask])
        figs["n_unscorable"] = n_nan
        if m is ours:
            if calibration:
                prob = np.array([1.0 - a.p_value for a in assessed])
                figs["calibration"] = {"probability": "1 - conformal p-value", **reliability(prob[mask], y[mask])}
            flags = np.array([a.flag for a in assessed])
            op = operating(flags, None, f"baseline {ours.baseline.id} at alpha={alpha:g} (per length bucket)",
                           recs, labels, lambda i: ours.spans(items[i], 0.0))
            methods[m.name] = {**figs, **op}
            continue
        variants = [(m.name, m.published, "published")] if published and m.published is not None else []
        variants.append((f"{m.name}_recal", threshold_at_fpr(s[y == 0], alpha), f"FPR={alpha:g} on this run's negatives"))
        for variant, thr, rule in variants:
            op = operating(m.flags(s, thr), thr, rule, recs, labels, lambda i, m=m, thr=thr: m.spans(items[i], thr))
            methods[variant] = {**figs, **op}
    return methods, scores, curves


def label_counts(recs: Sequence[EvalRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in recs).items()))
