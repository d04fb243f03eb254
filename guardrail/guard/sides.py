"""What the Guard judges each side with and on: the baselines a policy names (tiers checked against their
resolution), the request's messages, the text an output is judged on, its token count."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from ..backends.base import Backend, Message
from ..baselines.model import Baseline, BaselineError
from ..baselines.registry import resolve
from ..baselines.verdict import ScorerKind
from ..errors import ConfigError, InputError
from ..types import Generation
from .policy import SEVERITY, Policy, SideRules
from .report import SideDecision
from .routing import ROUTE, fallback_name
from .tool_calls import tool_call_problems

__all__ = ["cancel_task", "check_calls", "check_tiers", "judged_text", "messages_of", "n_output", "pick_scorer", "resolve_baselines"]


def resolve_baselines(policy: Policy, given: Mapping[str, Baseline] | None = None) -> dict[str, Baseline]:
    """The baseline of each enabled side (``given`` first, else by registered name), each tier checked against
    its resolution; errors name the policy file and line."""
    out = {}
    for side, rules in policy.sides().items():
        b = (given or {}).get(side)
        if b is None:
            try:
                # routed by domain: the router's fallback stands for the side (ids, scorer); see routing.py
                b = resolve(rules.baseline if rules.baseline != ROUTE else fallback_name(), side)
            except BaselineError as e:
                raise ConfigError(f"{policy.where(side, 'baseline')}: {side}.baseline: {e}") from None
        check_tiers(policy, side, [b])
        out[side] = b
    return out


def pick_scorer(policy: Policy, backend: Backend, scorer: Backend | None, side: str,
                b: Baseline) -> tuple[ScorerKind, Backend]:
    """Who judges a side with baseline ``b``: the serving backend's own logprobs when ``b`` was fitted for its
    scorer, else the (embedded) scorer teacher-forcing the text; neither is a ConfigError naming the policy line."""
    if b.scorer_id == backend.scorer.id:
        return "serving", backend
    if scorer is not None and b.scorer_id == scorer.scorer.id:
        if side == "output" and not hasattr(scorer, "score_reply"):
            raise ConfigError(f"{side}: the scorer {scorer.scorer.backend} cannot teacher-force a reply")
        return "embedded", scorer
    if side == "prompt" and b.scorer_id == backend.text_scorer.id:  # the backend hands text to its own scorer
        return "embedded", backend
    theirs = [backend.scorer.id] + ([scorer.scorer.id] if scorer is not None else [])
    raise ConfigError(
        f"{policy.where(side, 'baseline')}: {side} baseline {b.id} was fitted for scorer {b.scorer_id!r}; "
        f"neither the serving backend nor the scorer has it ({', '.join(map(repr, theirs))}): pass the "
        f"embedded scorer, or fit a baseline for the serving model (guardrail baseline fit)")


def check_tiers(policy: Policy, side: str, baselines: Sequence[Baseline]) -> None:
    rules = policy.sides()[side]
    for b in baselines:
        for i, tier in enumerate(rules.tiers):
            try:
                b.check_tier(tier.p, tail=tier.tail, where=f"{policy.where(side, 'tiers', i, 'p')}: {side}.tiers.{i}.p")
            except BaselineError as e:
                raise ConfigError(str(e)) from None


def messages_of(messages: Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    if not messages:
        raise InputError("messages: at least one message is needed")
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(m)
            continue
        try:
            out.append(Message.model_validate(dict(m)))
        except (ValidationError, TypeError, ValueError) as e:
            detail = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise InputError(f"messages[{i}]: {detail}") from None
    return out


async def cancel_task(task: asyncio.Future | None) -> None:
    """Cancel a generation started alongside the screen (a rejected prompt's answer is never used)."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elif task is not None and not task.cancelled():
        task.exception()  # retrieved: a failed generation nobody needs is not an unhandled error


def n_output(gen: Generation) -> int:
    return gen.completion_tokens if gen.completion_tokens is not None else len(gen.output.tokens)


def judged_text(gen: Generation) -> str:
    """What the output side judges when it teacher-forces: the answer's text, or, for an answer with tool calls,
    each call as ``name(arguments)`` on its own line -- what an agent would act on, the function it picked as
    well as what it passes (with logprobs the output's tokens spell the model's raw tool-call markup, which is
    not what the caller receives)."""
    calls = gen.message_extra.get("tool_calls") or []
    if not calls:
        return gen.output.text
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            name, args = fn.get("name"), fn.get("arguments")
            out.append(f"{name if isinstance(name, str) else ''}({args if isinstance(args, str) else ''})")
    return "\n".join(out)


def check_calls(d: SideDecision, rules: SideRules, gen: Generation, tools: Sequence[Any] | None) -> SideDecision:
    """The output decision with the answer's tool calls checked, when the policy asks (``invalid_tool_call``):
    a problem takes that action if it is more severe than the verdict's."""
    calls = gen.message_extra.get("tool_calls") or []
    if rules.invalid_tool_call is None or not calls:
        return d
    problems = tool_call_problems(calls, tools)
    if problems:
        d.tool_call_problems = problems
        if SEVERITY[rules.invalid_tool_call] > SEVERITY[d.action]:
            d.action = rules.invalid_tool_call
        d.reason += f"; invalid tool call ({problems[0]}{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}): {rules.invalid_tool_call}"
    return d
