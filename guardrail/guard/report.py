"""The report every Guard decision lands in: one pydantic model shared by the library, the CLI and the proxy.

Its JSON Schema is generated into docs/guard-report.schema.json (``python -m guardrail.guard.report``).
"""

from __future__ import annotations

import json
import sys
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..baselines.verdict import Verdict

__all__ = ["Attempt", "Checkpoint", "GuardReport", "ReviewInfo", "Sampling", "Shadow", "SideDecision", "StreamInfo", "Timings", "Usage"]

FinalAction = Literal["allow", "annotate", "reject", "review"]


class SideDecision(BaseModel):
    """One side's decision: the verdict of every text judged (each screened message on the prompt side), the
    combined p-value (Bonferroni over the messages: the request-level false-alarm rate stays <= the tier's p),
    the tier that fired and its action, and the fail mode used when something could not be judged."""

    side: Literal["prompt", "output"]
    action: str  # allow, annotate, regenerate (output), review, reject
    reason: str
    p_value: float | None = None  # combined
    tail_p: float | None = None
    tier: float | None = None  # the p of the tier that fired
    top_signal: str | None = None
    n_tests: int = 0  # texts combined (Bonferroni factor)
    fail_mode: str | None = None  # "unscorable: open" / "missing_signal: closed" ... when one decided
    missing: list[str] = Field(default_factory=list)
    verdicts: list[Verdict] = Field(default_factory=list)
    cached: int = 0  # verdicts served from the per-message cache
    # output side, the serving model's own generation: the own-generation baseline of the nearest sampling regime
    # ({"baseline", "fitted_temperature", "requested_temperature", "distance"}); None: the policy's baseline
    regime: dict[str, Any] | None = None
    tool_call_problems: list[str] = Field(default_factory=list)  # the answer's tool calls, checked (policy)


class Sampling(BaseModel):
    temperature: float
    top_p: float
    seed: int
    max_tokens: int
    system_note: str | None = None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Attempt(BaseModel):
    index: int
    sampling: Sampling
    action: str  # this attempt's own action
    output: SideDecision | None = None
    finish_reason: str | None = None
    text: str = ""
    usage: Usage = Field(default_factory=Usage)
    generate_ms: float = 0.0
    score_ms: float = 0.0
    error: str | None = None  # the backend failed on this attempt


class Checkpoint(BaseModel):
    tokens: int  # output tokens seen when assessed
    # None: every signal sat inside the thresholds precomputed from the cut-off (it could not abort; its full
    # assessment was not computed: guardrail.baselines.stream_bounds)
    p_value: float | None = None
    tail_p: float | None = None
    top_signal: str | None = None
    abort: bool = False


class StreamInfo(BaseModel):
    """A streamed response: the checkpoints assessed, where it was cut, what the client had received."""

    check_every: int
    abort_p: float  # the whole stream's false-abort budget
    # "calibrated": the baseline's whole-stream calibration (threshold = its cut-off for abort_p, n generations);
    # "bonferroni": none for this budget (threshold = abort_p / planned checkpoints)
    method: Literal["calibrated", "bonferroni"] = "bonferroni"
    calibration_n: int | None = None
    threshold: float  # compared with each checkpoint's tail_p
    planned_checkpoints: int
    calibrated_length: int | None = None  # longest output calibrated (tokens)
    beyond_calibrated: bool = False  # the stream ran past it (calibrated: checkpoints then judge the last
    # calibrated_length tokens; the guarantee covers the calibrated length only)
    checkpoints: list[Checkpoint] = Field(default_factory=list)
    cleared: int = 0  # checkpoints decided by the precomputed signal thresholds alone (no p-value computed)
    aborted_at: int | None = None  # output tokens generated when cut
    released_tokens: int = 0  # tokens the client received


class Timings(BaseModel):
    screen_concurrent: bool = False  # the first generation ran while the prompt was screened
    screen_ms: float = 0.0
    generate_ms: float = 0.0
    score_ms: float = 0.0
    decide_ms: float = 0.0
    review_ms: float = 0.0
    total_ms: float = 0.0

    @property
    def overhead_ms(self) -> float:
        """Time the guard added: the whole request minus the backend's generation and a person's review."""
        return max(0.0, self.total_ms - self.generate_ms - self.review_ms)


class Shadow(BaseModel):
    would: str  # the action the policy would have taken


class ReviewInfo(BaseModel):
    id: str
    mode: Literal["wait", "defer", "audit"]
    status: Literal["pending", "approved", "denied", "timeout"]
    side: Literal["prompt", "output"]


class GuardReport(BaseModel):
    request_id: str
    policy: str
    policy_hash: str
    action: FinalAction
    reason: str
    prompt: SideDecision | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    regenerated: int = 0
    budget_exhausted: str | None = None  # "tokens" / "seconds" when the ladder stopped for the budget
    usage: Usage = Field(default_factory=Usage)  # all attempts
    baselines: dict[str, str] = Field(default_factory=dict)  # side -> baseline id ("route": each verdict's own)
    scorers: dict[str, str] = Field(default_factory=dict)  # side -> "serving" | "embedded"
    shadow: Shadow | None = None
    review: ReviewInfo | None = None
    stream: StreamInfo | None = None  # streamed responses only
    timings: Timings = Field(default_factory=Timings)

    def summary(self) -> str:
        """One line for a log or a terminal."""
        bits = [f"action={self.action}", self.reason]
        if self.prompt is not None and self.prompt.p_value is not None:
            bits.append(f"prompt p={self.prompt.p_value:.3g}")
        if self.attempts and self.attempts[-1].output is not None and self.attempts[-1].output.p_value is not None:
            bits.append(f"output p={self.attempts[-1].output.p_value:.3g}")
        if self.regenerated:
            bits.append(f"regenerated {self.regenerated}x")
        return "; ".join(bits)


if __name__ == "__main__":  # python -m guardrail.guard.report > docs/guard-report.schema.json
    json.dump(GuardReport.model_json_schema(), sys.stdout, indent=1)
    sys.stdout.write("\n")
