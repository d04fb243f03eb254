"""A policy in plain words (``guardrail policy check``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..baselines.model import Baseline
from .policy import Policy
from .routing import Routed

__all__ = ["explain"]


def _tiers(rules, b: Baseline, routed: Routed | None = None) -> str:
    parts = [f"{t.action} when {'the tail statistic' if t.tail else 'p'} <= {t.p:g}" for t in rules.tiers]
    if routed is not None:
        coarsest = max(x.resolution for x in routed.all())
        return "; ".join(parts) + (f" (baseline routed per text by domain among {', '.join(routed.baselines)}; "
                                   f"{routed.router.fallback} when the router is unsure; coarsest resolution "
                                   f"{coarsest:.2g})")
    return "; ".join(parts) + f" (baseline {b.id}, resolution {b.resolution:.2g})"


def explain(policy: Policy, baselines: dict[str, Baseline], routed: Mapping[str, Routed] | None = None) -> list[str]:
    routed = routed or {}
    lines = [f"policy {policy.name} ({policy.hash}): {policy.description or 'no description'}"]
    if policy.shadow:
        lines.append("SHADOW MODE: every request is allowed; the report says what the policy would have done.")
    p, o = policy.prompt, policy.output
    if "prompt" in baselines and p is not None:
        lines.append(f"Prompt: each {'/'.join(p.roles)} message is scored on its own and the request's p-value is "
                     f"Bonferroni over them. Tiers: {_tiers(p, baselines['prompt'], routed.get('prompt'))}.")
        lines.append(f"  An unscorable prompt fails {p.unscorable}; a missing signal fails {p.missing_signal}"
                     f"{' (its most severe tier: ' + p.most_severe + ')' if 'closed' in (p.unscorable, p.missing_signal) else ''}.")
    else:
        lines.append("Prompt: not checked.")
    if "output" in baselines and o is not None:
        lines.append(f"Output: the answer is judged by its baseline. Tiers: {_tiers(o, baselines['output'], routed.get('output'))}.")
        lines.append(f"  An unscorable answer fails {o.unscorable}; a missing signal fails {o.missing_signal}.")
        if o.invalid_tool_call is not None:
            lines.append(f"  Tool calls are checked against the tools offered (name, JSON arguments, parameters "
                         f"schema); an invalid one: {o.invalid_tool_call}.")
        if any(t.action == "regenerate" for t in o.tiers):
            r = policy.regenerate
            rungs = ", ".join(
                "{" + ", ".join(f"{k}={v!r}" for k, v in rung.model_dump(exclude_none=True).items()) + "}"
                for rung in r.ladder)
            lines.append(f"Regenerate: up to {r.max_attempts} retries, rungs {rungs} (the last repeats), seeds from "
                         f"the request id and attempt; when they or the budget run out: {r.on_exhausted}.")
        st = policy.stream
        if st.enabled:
            from ..baselines.registry import regimes

            # the serving model's own output is judged by the nearest regime's baseline when there are regimes
            own = regimes(o.baseline) if "output" not in routed else []
            cal = (own[0] if own else baselines["output"]).stream if "output" not in routed else None
            if cal is not None and cal.serves(False, st.abort_p):
                bound, how = "at most", (f"calibrated {'over every prefix of' if cal.every_prefix else 'on'} "
                                         f"{cal.n} of the model's own generations"
                                         f"{' per sampling regime' if own else ''}, a checkpoint every "
                                         f"{st.check_every if cal.every_prefix else cal.check_every} tokens, up to "
                                         f"{cal.calibrated_length} tokens")
            else:
                bound, how = "about", f"Bonferroni over checkpoints every {st.check_every} tokens"
            lines.append(f"Streams: tokens are held back until a checkpoint passed; a normal answer is cut with "
                         f"probability {bound} {st.abort_p:g} over its whole stream ({how}) when the serving model's "
                         f"own logprobs judge it; "
                         + (f"a stream the embedded scorer judges is teacher-forced every {st.embedded_every} "
                            f"tokens ({_teacher_rule(baselines['output'].stream if 'output' not in routed else None, st)}"
                            f"; each decodes only what is new since the last one)." if st.embedded_every else
                            "a stream the embedded scorer judges passes through and is judged at its end "
                            "(stream.embedded_every: 0)."))
    else:
        lines.append("Output: not checked.")
    b = policy.budget
    lines.append(f"Budget per request, all attempts: {b.tokens if b.tokens else 'unlimited'} tokens, "
                 f"{f'{b.seconds:g} s' if b.seconds else 'no time limit'}.")
    lines.append(f"Reject: {'an OpenAI-style 400 error (code guardrail_rejected)' if policy.reject.style == 'error' else 'an assistant refusal (finish_reason content_filter)'}: "
                 f"{policy.reject.message!r}.")
    rv = policy.review
    mode = {"wait": f"the caller waits up to {rv.timeout_s:g} s for a person, then {rv.on_timeout}",
            "defer": "a held answer now (content_filter), a person decides later",
            "audit": "the answer is delivered now and reviewed after"}[rv.mode]
    lines.append(f"Review: {rv.mode}: {mode}.")
    return lines


def _teacher_rule(cal, st) -> str:
    """How a stream the embedded scorer teacher-forces is cut (TeacherForcedCheckpoints)."""
    if cal is not None and cal.serves(True, st.abort_p):
        return (f"a normal answer cut with probability at most {st.abort_p:g} within its first "
                f"{cal.calibrated_length} scorer tokens, calibrated over every prefix of {cal.n} reference answers")
    return "Bonferroni over those checkpoints"
