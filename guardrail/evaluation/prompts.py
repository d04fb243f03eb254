"""``guardrail eval prompts``: ours and the published comparators on labelled prompts, one scorer for all.

Ours is the shipped prompt-side baseline's decision at ``alpha``; records whose group was in the training data
of the baseline or of the comparators' reference are dropped and counted.  Every method gets the threshold-free
figures (AUROC, AUPRC, TPR at fixed FPR over the negatives, bootstrap intervals); at its operating threshold,
the flag rate per label, the TPR per group and the localisation of what it flags.  ``<name>_recal`` is a
comparator at the threshold that gives it FPR = alpha on this run's own negatives (an oracle choice, in its
favour).
"""

from __future__ import annotations

from collections.abc import Callable

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
from .reference import Reference
from .run import EvalRun, label_counts, run_methods

__all__ = ["comparators", "eval_prompts"]


def comparators(ref: Reference) -> list[Method]:
    return [WholePPL(ref.whole_ppl_threshold), JainWindow(ref.jain_threshold), NemoLengthPPL(), NemoPrefixSuffix(),
            CPDOnline(ref.cpd_mu, ref.cpd_sigma)]


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
    methods, scores, curves = run_methods(items, kept, labels, Guardrail(baseline, alpha), comparators(ref),
                                          alpha=alpha, n_boot=n_boot, seed=seed, published=True, calibration=False)
    doc = {
        "command": "eval prompts", "scorer": backend.scorer.report(), "baseline": baseline.id, "alpha": alpha,
        "reference": {k: v for k, v in ref.model_dump().items() if k not in ("training_groups", "sources")},
        "n": len(kept), "n_dropped_training": n_dropped, "n_unscorable": len(recs) - len(kept),
        "counts": label_counts(kept), "n_boot": n_boot, "seed": seed, "methods": methods,
    }
    return EvalRun(doc=doc, scores=scores, records=kept, curves=curves)
