"""From verdicts to one side's decision (pure): fail modes, Bonferroni over messages, severity tiers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..baselines.verdict import Verdict
from .policy import SEVERITY, SideRules
from .report import SideDecision

__all__ = ["decide_side", "most_severe"]


def most_severe(*actions: str) -> str:
    return max(actions, key=SEVERITY.__getitem__)


def decide_side(side: Literal["prompt", "output"], rules: SideRules, verdicts: Sequence[Verdict]) -> SideDecision:
    """The side's action.  An unscorable text or a missing signal decides by the side's fail mode (open: judge
    on what there is; closed: the side's most severe tier).  The combined p-value is Bonferroni's
    ``min(1, m * min_i p_i)`` over the m texts judged, so a request of m screened messages is flagged by a
    benign-traffic tier at most at the tier's rate."""
    verdicts = list(verdicts)
    base = dict(side=side, verdicts=verdicts, n_tests=len(verdicts))
    bad = [v for v in verdicts if not v.scorable]
    if bad:
        why = bad[0].reason or "unscorable"
        if rules.unscorable == "closed":
            return SideDecision(action=rules.most_severe, reason=f"{side} unscorable ({why}); fail closed",
                                fail_mode="unscorable: closed", **base)
        verdicts = [v for v in verdicts if v.scorable]
        if not verdicts:
            return SideDecision(action="allow", reason=f"{side} unscorable ({why}); fail open",
                                fail_mode="unscorable: open", **base)
    missing = sorted({m for v in verdicts for m in v.missing})
    m = len(verdicts)
    top = min(verdicts, key=lambda v: v.p_value)  # scorable verdicts: each has its p-values
    p = min(1.0, m * top.p_value)
    tail = min(1.0, m * min(v.tail_p for v in verdicts))
    fields = dict(p_value=p, tail_p=tail, top_signal=top.top_signal, missing=missing, **base)
    if missing and rules.missing_signal == "closed":
        return SideDecision(action=rules.most_severe, reason=f"{side}: signals missing ({', '.join(missing)}); "
                            f"fail closed", fail_mode="missing_signal: closed", **fields)
    fired = [t for t in rules.tiers if (tail if t.tail else p) <= t.p]
    fail_mode = "missing_signal: open" if missing else None
    if not fired:
        return SideDecision(action="allow", reason=f"{side} p={p:.3g}: no tier fired", fail_mode=fail_mode, **fields)
    tier = max(fired, key=lambda t: (SEVERITY[t.action], -t.p))
    stat = "tail_p" if tier.tail else "p"
    return SideDecision(action=tier.action, tier=tier.p, fail_mode=fail_mode,
                        reason=f"{side} {stat}={tail if tier.tail else p:.3g} <= {tier.p:g} "
                               f"(top signal {top.top_signal}): {tier.action}", **fields)
