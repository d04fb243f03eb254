"""Robustness to distribution shift: leave-one-source-out calibration of a prompt-side baseline.

A held-back split of the sources a baseline was fitted on says nothing about traffic of another kind.  For
each benign source S, a calibrator is fitted on every other source and the realised flag rate is measured on
all of S's units (none of which took part in fitting): the rate a deployment whose traffic looks like S, and
like none of the fitting sources, would see.  The goal is every left-out source within [0.5 alpha, 2 alpha];
the worst source is the figure that matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..baselines.conformal import Calibrator

__all__ = ["SourceFeats", "leave_one_source_out", "rates", "summarise"]

Feat = dict[str, float]
FitFn = Callable[[Sequence[Feat], Sequence[str]], Calibrator]


@dataclass
class SourceFeats:
    """The scorable units of one source: their features and group keys, in the same order."""

    feats: list[Feat]
    groups: list[str]


def rates(assess: Callable[[Feat, float], bool], feats: Sequence[Feat], alphas: Sequence[float]) -> dict[str, dict]:
    """Flags and rate per alpha, and whether the rate lies within [0.5 alpha, 2 alpha]."""
    out = {}
    for a in alphas:
        k = sum(bool(assess(f, a)) for f in feats)
        n = len(feats)
        rate = k / n if n else math.nan
        out[f"{a:g}"] = {"n": n, "flags": k, "rate": round(rate, 5), "within": bool(n) and 0.5 * a <= rate <= 2 * a}
    return out


def leave_one_source_out(
    sources: Mapping[str, SourceFeats], fit: FitFn, alphas: Sequence[float],
    fit_on: Mapping[str, SourceFeats] | None = None,
) -> dict:
    """For each source: a calibrator fitted on all the others (their units in ``fit_on`` when given, e.g. capped
    per source), its flag rates on every unit of that source.  Returns
    ``{"sources": {name: {alpha: {n, flags, rate, within}}}, "highest" / "lowest": {alpha: {source, rate, n}},
    "all_within"}``."""
    table: dict[str, dict] = {}
    for name, held in sources.items():
        pool = [(f, g) for other, s in (fit_on or sources).items() if other != name
                for f, g in zip(s.feats, s.groups, strict=True)]
        cal = fit([f for f, _ in pool], [g for _, g in pool])
        table[name] = rates(lambda f, a, cal=cal: cal.assess(f, a).flag, held.feats, alphas)
    return summarise(table, alphas)


def summarise(table: dict[str, dict], alphas: Sequence[float]) -> dict:
    """Per alpha, the source flagged most (the false alarms a deployment like it would see) and least."""
    highest, lowest = {}, {}
    for a in alphas:
        key = f"{a:g}"
        hi = max(table, key=lambda s: table[s][key]["rate"])
        lo = min(table, key=lambda s: table[s][key]["rate"])
        highest[key] = {"source": hi, "rate": table[hi][key]["rate"], "n": table[hi][key]["n"]}
        lowest[key] = {"source": lo, "rate": table[lo][key]["rate"], "n": table[lo][key]["n"]}
    return {"sources": table, "highest": highest, "lowest": lowest,
            "all_within": all(row[f"{a:g}"]["within"] for row in table.values() for a in alphas)}
