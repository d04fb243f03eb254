"""``guardrail eval outputs``: output-side signals on labelled outputs (degenerate, hallucinated, ...).

Each output is scored as the assistant's reply to its context (``--context-field``: the instruction or the
question), or on its own without one.  Ours is the output-side baseline's decision at ``alpha``; the
comparators (whole-text perplexity, 10-token windowed perplexity, CUSUM change-point) are given at the
threshold that yields FPR = alpha on this run's negatives (``_recal``).  Ours also yields a number in [0, 1]:
1 - its conformal p-value; its calibration against the labels (ECE, reliability) is reported, though it is a
p-value under "benign", not a fitted probability of the label.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends.base import Backend
from ..baselines.features import features
from ..baselines.model import Baseline
from ..batch import score_replies, score_texts
from ..cache import ScoreCache
from ..errors import InputError
from ..scoring import TokenArrays
from ..types import Side
from .data import EvalRecord, LabelSpec, drop_trained
from .methods import CPDOnline, Guardrail, Item, JainWindow, WholePPL
from .metrics import reliability, roc_curve, summary, threshold_at_fpr
from .prompts import EvalRun, operating
from .reference import Reference

__all__ = ["eval_outputs"]


async def eval_outputs(
    backend: Backend, records: list[EvalRecord], labels: LabelSpec, baseline: Baseline, ref: Reference, *,
    alpha: float = 0.01, cache: ScoreCache | None = None, progress: Callable[[int], None] | None = None,
    n_boot: int = 1000, seed: int = 0,
) -> EvalRun:
    recs, n_dropped = drop_trained(records, set(baseline.training_groups))
    with_context = any(r.context is not None for r in recs)
    if with_context:
        segs = await score_replies(backend, [(r.context or "", r.text) for r in recs], cache=cache,
                                   progress=progress)
    else:
        segs = await score_texts(backend, [r.text for r in recs], side=Side.OUTPUT, cache=cache, errors="skip",
                                 progress=progress)
    items, kept = [], []
    for r, seg in zip(recs, segs, strict=True):
        feats = features(seg, baseline.widths) if seg is not None else None
        if seg is None or feats is None:
            continue
        items.append(Item(r.text, TokenArrays.from_segment(seg), feats))
        kept.append(r)
    y = np.array([-1 if labels.y(r.label) is None else labels.y(r.label) for r in kept])
    if not {0, 1} <= set(y.tolist()):
        raise InputError("after dropping training records and unscorable outputs, one class is empty")
    mask = y >= 0
    ours = Guardrail(baseline, alpha)
    methods: dict = {}
    scores: dict[str, np.ndarray] = {}
    curves = {}
    for m in (ours, WholePPL(), JainWindow(), CPDOnline(ref.cpd_mu, ref.cpd_sigma)):
        s = np.array([m.score(it) for it in items], dtype=np.float64)
        n_nan = int(np.isnan(s).sum())
        s = np.where(np.isnan(s), np.finfo(float).min, s)
        scores[m.name] = s
        figs = summary(s[mask], y[mask], n_boot=n_boot, seed=seed)
        figs["n_unscorable"] = n_nan
        curves[m.name] = roc_curve(s[mask], y[mask])
        if m is ours:
            assessed = [baseline.assess(it.feats, alpha) for it in items]
            flags = np.array([a.flag for a in assessed])
            prob = np.array([1.0 - a.p_value for a in assessed])
            figs["calibration"] = {"probability": "1 - conformal p-value", **reliability(prob[mask], y[mask])}
            op = operating(flags, None, f"baseline {baseline.id} at alpha={alpha:g}", kept, labels,
                            lambda i: ours.spans(items[i], 0.0))
            methods[m.name] = {**figs, **op}
        else:
            thr = threshold_at_fpr(s[y == 0], alpha)
            op = operating(m.flags(s, thr), thr, f"FPR={alpha:g} on this run's negatives", kept, labels,
                            lambda i, m=m, thr=thr: m.spans(items[i], thr))
            methods[f"{m.name}_recal"] = {**figs, **op}
    counts: dict[str, int] = {}
    for r in kept:
        counts[r.label] = counts.get(r.label, 0) + 1
    doc = {
        "command": "eval outputs", "scorer": backend.scorer.report(), "baseline": baseline.id, "alpha": alpha,
        "conditioned_on_context": with_context, "n": len(kept), "n_dropped_training": n_dropped,
        "n_unscorable": len(recs) - len(kept), "counts": dict(sorted(counts.items())), "n_boot": n_boot,
        "seed": seed, "methods": methods,
    }
    return EvalRun(doc=doc, scores=scores, records=kept, curves=curves)
