"""``guardrail eval calibration``: realised false-alarm rate per domain vs the target alpha.

Each corpus file is a domain (its stem names the shipped baseline, e.g. ``legal_contracts.jsonl``).  Units are
cut by the domain's baseline's recipe (document order, chunk lengths, chunks per document), from documents
not in its training data; each rate comes with its exact 99 % binomial interval and the check the Baselines issue states: within [0.5a, 1.5a]
where n is large enough for that band (about 1,500 units at a = 1 %, 300 at 5 %), otherwise within the 99 %
binomial interval of Binomial(n, a).  With ``compare_global`` the pooled global baseline is measured on the
same units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..backends.base import Backend
from ..baselines.corpus import UnitRecipe, read_records
from ..baselines.fit import featurize, flag_rate, rate_check
from ..baselines.model import Baseline
from ..baselines.splits import group_hash
from ..cache import ScoreCache
from ..types import Side

__all__ = ["eval_calibration"]


def _units(path: Path, b: Baseline, text_field: str, limit: int | None):
    """Units cut by the baseline's recipe (chunk lengths, chunks per document spread over it, document order),
    then those of its training documents dropped: on the fitting corpus itself these are its test split; on a
    new corpus the same unit definition the thresholds were calibrated for."""
    records = read_records(path, text_field)
    trained = set(b.training_groups)
    kept = UnitRecipe.of(b.unit).held_out(records, trained)
    dropped = len({r.group for r in records if group_hash(r.group) in trained})
    return kept[: limit or int((b.unit or {}).get("max_units") or 500)], dropped


def _rates(b: Baseline, feats: Sequence[dict[str, float] | None], alphas: Sequence[float]) -> list[dict]:
    out = []
    for a in alphas:
        rep = flag_rate(b, feats, a)
        out.append(rate_check(rep.flags, rep.n, a))
    return out


async def eval_calibration(
    backend: Backend, files: Sequence[Path], baseline_of: Callable[[str], Baseline], *, alphas: Sequence[float],
    text_field: str = "text", global_baseline: Baseline | None = None, limit: int | None = None,
    cache: ScoreCache | None = None, progress: Callable[[int], None] | None = None,
) -> dict:
    domains: dict[str, dict] = {}
    pooled: dict[str, dict] = {}
    for path in files:
        d = Path(path).stem
        b = baseline_of(d)
        units, dropped = _units(Path(path), b, text_field, limit)
        feats = await featurize(backend, [u.text for u in units], Side(b.side), b.widths, cache, progress)
        domains[d] = {"baseline": b.id, "file": str(path), "n_dropped_training": dropped,
                      "rates": _rates(b, feats, alphas)}
        if global_baseline is not None:
            g_feats = feats if list(global_baseline.widths) == list(b.widths) else await featurize(
                backend, [u.text for u in units], Side(global_baseline.side), global_baseline.widths, cache)
            pooled[d] = {"baseline": global_baseline.id, "rates": _rates(global_baseline, g_feats, alphas)}
    out = {"command": "eval calibration", "scorer": backend.scorer.report(), "alphas": list(alphas),
           "domains": domains}
    if global_baseline is not None:
        out["global"] = pooled
    return out
