"""Streams through the assessor: how often a normal generation is cut anywhere in its stream, and how early a
degenerate one is (``guardrail eval stream``).

Each generation (guardrail.evaluation.generations: its tokens as the backend gave them) is replayed token by
token through :class:`~guardrail.guard.stream_assess.StreamAssessor` at the budget ``alpha``.  Per temperature,
over the generations that do not loop: the whole-stream abort rate with the 99 % acceptance interval of
Binomial(n, alpha) / n (a calibrated rule lands inside it), the median token of the cut (counted from the first
token), and the ablation: plain per-prefix checking (cut at the first checkpoint whose tail statistic is <=
alpha).  Generations that loop (guardrail.loops; degenerate by a rule independent of the detector) are the
positives: their abort rate and the median number of tokens from the loop's onset to the cut.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

from ..baselines.model import Baseline
from ..guard.policy import StreamRules
from ..guard.stream_assess import StreamAssessor
from .generations import StoredGeneration

__all__ = ["acceptance_99", "eval_streams", "replay"]


def replay(baseline: Baseline, gen: StoredGeneration, alpha: float, check_every: int) -> tuple[int | None, int | None, dict]:
    """(token of the whole-stream cut or None, token of the first per-prefix flag at alpha or None, stream info)."""
    a = StreamAssessor(baseline, StreamRules(check_every=check_every, abort_p=alpha), gen.max_tokens, full=True)
    per_prefix = None
    for t in gen.tokens:
        cp = a.push(t)
        if cp is not None and per_prefix is None and cp.tail_p <= alpha:
            per_prefix = cp.tokens
    return a.info.aborted_at, per_prefix, a.info.model_dump(include={"method", "check_every", "threshold",
                                                                     "calibration_n", "calibrated_length"})


def acceptance_99(n: int, alpha: float) -> list[float]:
    """The 99 % acceptance interval of Binomial(n, alpha) / n."""
    from scipy.stats import binom

    if not n:
        return [0.0, 1.0]
    return [float(binom.ppf(0.005, n, alpha)) / n, float(binom.ppf(0.995, n, alpha)) / n]


def eval_streams(by_temperature: Mapping[str, Sequence[StoredGeneration]], baseline_for: Callable[[float], Baseline],
                 *, alpha: float, check_every: int) -> dict:
    out: dict = {"alpha": alpha, "check_interval": None, "by_temperature": {}, "loops": {}}
    loops: list[tuple[int | None, int]] = []
    for key, gens in by_temperature.items():
        cuts, prefix_cuts, info, base = [], 0, None, None
        for g in gens:
            base = baseline_for(g.temperature)
            cut, first, info = replay(base, g, alpha, check_every)
            if g.loop:
                loops.append((cut, g.loop_onset or 0))
                continue
            cuts.append(cut)
            prefix_cuts += first is not None
        aborted = [c for c in cuts if c is not None]
        n = len(cuts)  # the generations that do not loop
        row = {"n": n, "n_loops": len(gens) - n, "abort_rate": len(aborted) / n if n else None,
               "binomial_99": acceptance_99(n, alpha),
               "median_abort_token": statistics.median(aborted) if aborted else None,
               "per_prefix_abort_rate": prefix_cuts / n if n else None,
               "baseline": base.id if base is not None else None, **(info or {})}
        row["within_binomial_99"] = n > 0 and row["binomial_99"][0] <= row["abort_rate"] <= row["binomial_99"][1]
        out["by_temperature"][key] = row
        out["check_interval"] = out["check_interval"] or (info or {}).get("check_every")
    hit = [(c, o) for c, o in loops if c is not None]
    out["loops"] = {"n": len(loops), "abort_rate": len(hit) / len(loops) if loops else None,
                    "median_tokens_after_onset": statistics.median(c - o for c, o in hit) if hit else None}
    return out
