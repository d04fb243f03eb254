"""One text's verdict against one baseline: what a decision needs, alpha-free (the policy's tiers decide).

A :class:`Verdict` carries the conformal p-value and its continuous tail statistic, the baseline's resolution
(the smallest p-value it can give), the most extreme signal, the signals that could not be computed (listed,
never read as typical), and the flagged spans as character offsets into the text -- with the index of the
request message the text is, when it is one.  An unscorable text (no logprobs) is a verdict with
``scorable=False`` and the reason, never a score of 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from ..scoring import TokenArrays
from ..types import Segment
from .features import features
from .model import Baseline
from .router import Route
from .spans import decision_spans

__all__ = ["DriftState", "ScorerKind", "Span", "Verdict", "judge", "unscorable"]

ScorerKind = Literal["serving", "embedded"]


class Span(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: int | None = None  # index of the request message the offsets are in (None: the output)
    start: int  # Python string index into that message's content (or the output), end exclusive
    end: int
    text: str


class DriftState(BaseModel):
    """The baseline's drift monitor after this text (guardrail.guard.drift: online conformal p-values, a test
    martingale; per process)."""

    p_value: float  # this text's online conformal p-value (the monitor's, not the decision's)
    log10_martingale: float  # since the last restart
    observed: int  # texts this monitor has observed
    alarms: int = 0  # times the martingale reached the alarm level (each followed by a restart)
    alarm: bool = False  # this text raised one


class Verdict(BaseModel):
    side: Literal["prompt", "output"]
    scorable: bool
    reason: str | None = None  # why not scorable
    message: int | None = None  # prompt side: index into the request's messages
    role: str | None = None
    scorer: str  # scorer id
    scorer_kind: ScorerKind  # the serving model's own logprobs, or the embedded scorer teacher-forcing the text
    baseline: str | None = None  # baseline id
    route: Route | None = None  # the policy routes by domain: the domain this text was routed to, and how
    p_value: float | None = None  # conformal p-value within the text's length bucket
    tail_p: float | None = None  # the same made continuous (a ranking below the resolution, not a guarantee)
    resolution: float | None = None  # smallest p-value the baseline gives this text: 1 / (n + 1)
    top_signal: str | None = None
    signal_p: dict[str, float] = Field(default_factory=dict)
    missing: list[str] = Field(default_factory=list)  # signals with no value: they took no part in p_value
    spans: list[Span] = Field(default_factory=list)
    n_tokens: int = 0
    beyond_fitted_length: bool = False
    drift: DriftState | None = None  # set by a Guard with a drift board, for a text judged afresh
    _monitor: tuple[int, float] | None = PrivateAttr(default=None)  # (length bucket, monitor score)

    @property
    def monitor_point(self) -> tuple[int, float] | None:
        """(length bucket, monitor score): what a drift monitor observes for this text (None: not judged here,
        e.g. unscorable).  Not part of the report."""
        return self.__pydantic_private__["_monitor"]  # type: ignore[index]  # (not pydantic's __getattr__)


def unscorable(side: Literal["prompt", "output"], reason: str, *, scorer: str, scorer_kind: ScorerKind,
               baseline: str | None = None, message: int | None = None, role: str | None = None) -> Verdict:
    return Verdict(side=side, scorable=False, reason=reason, scorer=scorer, scorer_kind=scorer_kind,
                   baseline=baseline, message=message, role=role)


def judge(baseline: Baseline, seg: Segment, *, side: Literal["prompt", "output"], scorer_kind: ScorerKind,
          message: int | None = None, role: str | None = None) -> Verdict:
    """The verdict of ``baseline`` on ``seg`` (checked first: scorer, side, entropy kind -- a mismatch raises
    :class:`~guardrail.baselines.model.BaselineError`)."""
    baseline.check_segment(seg, f"{side} side")
    arrays = TokenArrays.of(seg)
    feats = features(seg, baseline.widths, arrays, only=baseline.calibrator.inputs)
    common = dict(side=side, scorer=seg.scorer_id, scorer_kind=scorer_kind, baseline=baseline.id, message=message,
                  role=role)
    if feats is None:
        return Verdict(scorable=False, reason="no token of the text has a logprob", n_tokens=len(seg.tokens),
                       **common)
    a = baseline.assess(feats, max(baseline.target_alphas))  # the p-value does not depend on alpha
    spans = [Span(message=message, start=s, end=e, text=seg.text[s:e])
             for s, e in decision_spans(baseline, arrays, feats, a.top_signal)]
    v = Verdict(
        scorable=True, p_value=a.p_value, tail_p=a.tail_p, resolution=a.resolution, top_signal=a.top_signal,
        signal_p={k: round(v, 6) for k, v in a.signal_p.items()}, missing=a.missing, spans=spans,
        n_tokens=len(seg.tokens), beyond_fitted_length=a.beyond_fitted_length, **common)
    v._monitor = (a.bucket, a.monitor_score)
    return v
