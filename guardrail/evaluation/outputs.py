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

from ..backends.base import Backend
from ..baselines.features import features
from ..baselines.model import Baseline
from ..batch import score_replies, score_texts
from ..cache import ScoreCache
from ..scoring import TokenArrays
from ..types import Side
from .data import EvalRecord, LabelSpec, drop_trained
from .methods import CPDOnline, Guardrail, Item, JainWindow, WholePPL
from .reference import Reference
from .run import EvalRun, label_counts, run_methods

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
    methods, scores, curves = run_methods(
        items, kept, labels, Guardrail(baseline, alpha), (WholePPL(), JainWindow(), CPDOnline(ref.cpd_mu, ref.cpd_sigma)),
        alpha=alpha, n_boot=n_boot, seed=seed, published=False, calibration=True,
    )
    doc = {
        "command": "eval outputs", "scorer": backend.scorer.report(), "baseline": baseline.id, "alpha": alpha,
        "conditioned_on_context": with_context, "n": len(kept), "n_dropped_training": n_dropped,
        "n_unscorable": len(recs) - len(kept), "counts": label_counts(kept), "n_boot": n_boot,
        "seed": seed, "methods": methods,
    }
    return EvalRun(doc=doc, scores=scores, records=kept, curves=curves)
