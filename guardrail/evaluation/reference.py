"""What the comparators need fitted, from training splits only: CPD's token standardization and the
threshold rule of Jain et al. / Alon & Kamfonas (the largest value over plain harmful prompts, AdvBench).

Stored as JSON beside the shipped baselines (``guardrail/data/baselines/eval_reference.json``), made by
``make baselines``; it records the scorer it was fitted with and the hashes of its training groups, so that
evaluation drops those records like it drops the baselines' own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ..backends.base import ScorerInfo
from ..baselines.model import BaselineError
from ..scoring import TokenArrays
from .methods import Item, JainWindow, WholePPL

__all__ = ["Reference", "fit_reference", "load_reference", "reference_path"]

FORMAT = "guardrail.eval-reference/1"


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["guardrail.eval-reference/1"] = FORMAT
    scorer_id: str
    cpd_mu: float  # mean of (surprise - entropy) over benign training tokens, nats
    cpd_sigma: float
    whole_ppl_threshold: float  # max mean NLL over the plain harmful training prompts
    jain_threshold: float  # max 10-token window mean NLL over the same prompts
    n_benign_tokens: int
    n_harmful: int
    sources: dict
    training_groups: list[str]

    def check_scorer(self, scorer: ScorerInfo, where: str) -> None:
        if scorer.id != self.scorer_id:
            raise BaselineError(f"{where}: fitted with scorer {self.scorer_id}, not {scorer.id}")


def fit_reference(
    scorer_id: str, benign: Sequence[TokenArrays], harmful: Sequence[TokenArrays], *, sources: dict,
    training_groups: Sequence[str],
) -> Reference:
    d = np.concatenate([a.nll - a.entropy for a in benign]) if benign else np.empty(0)
    d = d[~np.isnan(d)]
    if d.size < 100 or not harmful:
        raise BaselineError(f"too little reference data: {d.size} benign tokens, {len(harmful)} harmful prompts")
    items = [Item("", a, {}) for a in harmful]
    whole = [v for v in (WholePPL().score(it) for it in items) if math.isfinite(v)]
    jain = [v for v in (JainWindow().score(it) for it in items) if math.isfinite(v)]
    return Reference(
        scorer_id=scorer_id, cpd_mu=float(d.mean()), cpd_sigma=float(d.std()) or 1.0,
        whole_ppl_threshold=max(whole), jain_threshold=max(jain), n_benign_tokens=int(d.size),
        n_harmful=len(harmful), sources=sources, training_groups=sorted(set(training_groups)),
    )


def reference_path() -> Path:
    from ..baselines.registry import shipped_dir

    return shipped_dir() / "eval_reference.json"


def load_reference(path: str | Path | None = None, scorer: ScorerInfo | None = None) -> Reference:
    p = Path(path) if path is not None else reference_path()
    try:
        ref = Reference.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except OSError as e:
        raise BaselineError(f"{p}: cannot read ({e.strerror or e})") from None
    except (ValueError, ValidationError) as e:
        raise BaselineError(f"{p}: not an evaluation reference ({str(e).splitlines()[0]})") from None
    if scorer is not None:
        ref.check_scorer(scorer, str(p))
    return ref

