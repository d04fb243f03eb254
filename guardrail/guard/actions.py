"""The final actions as small strategy objects: each turns a decision into what the caller receives.

``regenerate`` is not here: it is the Guard's ladder (try again while the budget allows), which ends in one of
these.  A strategy returns a :class:`~guardrail.guard.result.GuardResult`, or ``None`` from a prompt-side
review that was approved in ``wait`` mode (the Guard then goes on to generate).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .completion import chat_completion, error_body
from .report import GuardReport, ReviewInfo
from .result import GuardResult
from .review import ReviewItem

if TYPE_CHECKING:
    from ..types import Generation
    from .policy import Policy
    from .review import ReviewQueue

__all__ = ["ACTION_STRATEGIES", "ActionStrategy", "Candidate", "deliver"]


@dataclass
class Candidate:
    """What would be delivered: the last attempt's text (None before generation)."""

    model: str
    text: str | None
    finish_reason: str | None
    generation: Generation | None = None  # the attempt behind ``text`` (its tokens and logprobs)


class ActionStrategy(Protocol):
    async def apply(self, report: GuardReport, cand: Candidate, side: str, policy: Policy,
                    queue: ReviewQueue) -> GuardResult | None: ...


def deliver(report: GuardReport, cand: Candidate, action: str) -> GuardResult:
    report.action = action  # type: ignore[assignment]
    if cand.text is None:  # prompt-side decision before any generation: nothing to deliver yet
        return GuardResult(completion=None, report=report)
    gen = cand.generation
    content = cand.text if cand.text or gen is None or not gen.message_extra.get("tool_calls") else None
    comp = chat_completion(report.request_id, cand.model, content, cand.finish_reason or "stop", report.usage,
                           gen.message_extra if gen is not None else None, gen.response_extra if gen is not None
                           else None)
    return GuardResult(completion=comp, report=report, generation=gen)


class Allow:
    def __init__(self, annotate: bool = False) -> None:
        self.name = "annotate" if annotate else "allow"

    async def apply(self, report, cand, side, policy, queue):
        return deliver(report, cand, self.name)


class Reject:
    async def apply(self, report, cand, side, policy, queue):
        report.action = "reject"
        msg = policy.reject.message
        if policy.reject.style == "refusal":
            comp = chat_completion(report.request_id, cand.model, msg, "content_filter", report.usage)
            return GuardResult(completion=comp, report=report)
        return GuardResult(completion=None, report=report, status=400,
                           error=error_body(f"{msg} ({report.reason})"))


class Review:
    """``defer``: a held completion now (content_filter, review pending); ``audit``: deliver now, review after;
    ``wait``: wait up to the timeout -- approved delivers (or, on the prompt side, lets generation go on), denied
    rejects, no decision takes the policy's timeout action."""

    async def apply(self, report, cand, side, policy, queue):
        rules = policy.review
        report.action = "review"
        rid = await queue.submit(ReviewItem(request_id=report.request_id, side=side,
                                            report=report.model_dump(mode="json")))
        report.review = ReviewInfo(id=rid, mode=rules.mode, status="pending", side=side)  # type: ignore[arg-type]
        if rules.mode == "audit":
            res = deliver(report, cand, "review")
            return res if cand.text is not None else None  # a prompt under audit goes on to generate
        if rules.mode == "defer":
            comp = chat_completion(report.request_id, cand.model, rules.message, "content_filter", report.usage)
            return GuardResult(completion=comp, report=report)
        t = time.perf_counter()
        decision = await queue.wait(rid, rules.timeout_s)
        report.timings.review_ms += (time.perf_counter() - t) * 1e3
        if decision is None:
            report.review.status = "timeout"
            report.reason += f"; review timed out after {rules.timeout_s:g} s: {rules.on_timeout}"
            return await ACTION_STRATEGIES[rules.on_timeout].apply(report, cand, side, policy, queue)
        if decision == "deny":
            report.review.status = "denied"
            report.reason += "; review denied"
            return await ACTION_STRATEGIES["reject"].apply(report, cand, side, policy, queue)
        report.review.status = "approved"
        report.reason += "; review approved"
        if cand.text is None:
            return None
        return deliver(report, cand, "review")


ACTION_STRATEGIES: dict[str, ActionStrategy] = {
    "allow": Allow(), "annotate": Allow(annotate=True), "reject": Reject(), "review": Review(),
}
