"""Whole-stream calibration of the early-abort rule (pure numpy/python, no I/O).

A stream is checked every ``k`` tokens; each check is a test, and testing a growing output at alpha at every
checkpoint cuts far more than alpha of normal streams.  The calibrated rule controls the chance of a false abort
*anywhere* in a stream directly: for each calibration generation (the serving model's own normal generations,
apart from those the baseline's references were fitted on; loops kept out) the smallest tail statistic over its
checkpoints is recorded; a new stream is cut at the first checkpoint whose tail statistic is at most the
``floor(alpha (n + 1))``-th smallest of those minima.  For a normal generation exchangeable with the calibration
ones, the chance that its smallest checkpoint statistic falls that low is at most alpha (the split-conformal
argument applied to the stream's minimum): P(false abort within the calibrated length) <= alpha, with no
Bonferroni division.

The guarantee covers streams up to the calibrated length (the calibration generations' ``max_tokens``).  Past it,
each checkpoint is assessed on the last ``calibrated_length`` tokens (a window of the calibrated length, so the
statistic keeps the distribution it was calibrated on) and the report says the stream went beyond.

A calibration with ``check_every = 1`` takes each generation's minimum over *every* prefix (of at least
``min_tokens`` tokens): any schedule of checkpoints visits a subset of those prefixes, whose minimum can only be
larger, so the same cut-off bounds the false-abort chance of every schedule.  That is the calibration for a
stream whose checkpoints fall where another backend's tokens end (the embedded scorer teacher-forcing a remote
answer, guardrail.guard.stream_assess.TeacherForcedCheckpoints).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import LogprobMode, Segment, Side, Token
from .features import features
from .stream_state import StreamState

__all__ = ["CheckpointFeatures", "StreamCalibration", "calibrate_stream", "stream_minimum"]


class StreamCalibration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check_every: int = Field(ge=1)  # tokens between checkpoints (the rule holds for this k only)
    calibrated_length: int = Field(ge=1)  # the calibration generations' max_tokens
    n: int  # calibration generations
    minima: list[float]  # each one's smallest checkpoint tail statistic, ascending
    temperatures: list[float] = Field(default_factory=list)  # sampling temperatures of the calibration generations
    notes: list[str] = Field(default_factory=list)
    # prefixes shorter than this took no part in the minima and are never cut (None: every checkpoint counted)
    min_tokens: int | None = Field(None, ge=1)
    # what was calibrated: the serving model's own generations (None, as in files written before the field) or
    # answers teacher-forced by the embedded scorer (another backend's stream): each is used on its own path only
    source: Literal["teacher_forced"] | None = None

    @property
    def every_prefix(self) -> bool:
        """Calibrated over every prefix: the cut-off holds for any checkpoint schedule."""
        return self.check_every == 1

    def serves(self, teacher_forced: bool, alpha: float) -> bool:
        """Whether this calibration gives the cut-off for ``alpha`` on one path: the serving model's own stream
        (a calibration of its own generations), or another backend's answer teacher-forced by the embedded
        scorer, whose checkpoints fall anywhere (a teacher-forced calibration over every prefix)."""
        path_ok = (self.source == "teacher_forced" and self.every_prefix) if teacher_forced else self.source is None
        return path_ok and self.threshold(alpha) is not None

    def threshold(self, alpha: float) -> float | None:
        """The cut-off for a whole-stream false-abort budget ``alpha``; None when alpha is below the resolution
        ``1 / (n + 1)`` (no threshold can promise it)."""
        k = math.floor(alpha * (self.n + 1) + 1e-9)
        return self.minima[k - 1] if k >= 1 else None

    @property
    def resolution(self) -> float:
        return 1.0 / (self.n + 1)


class CheckpointFeatures:
    """Tokens in, the feature vector at every ``check_every``-th token out: of the whole prefix up to ``window``
    tokens, of the last ``window`` tokens past it (``window`` None: always the prefix).  The assessor and the
    calibration both read checkpoints through this class, so they compute the same statistic."""

    def __init__(self, widths: Sequence[int], entropy_k: int | None, check_every: int, window: int | None) -> None:
        self.widths, self.entropy_k, self.k, self.window = tuple(widths), entropy_k, check_every, window
        self.state = StreamState(self.widths)
        self._last: deque[Token] | None = deque(maxlen=window) if window else None
        self.n = 0

    @property
    def beyond(self) -> bool:
        return self.window is not None and self.n > self.window

    def push(self, token: Token) -> dict[str, float] | None:
        self.state.push(token)
        self.n += 1
        if self._last is not None:
            self._last.append(token)
        if self.n % self.k:
            return None
        if not self.beyond:
            return self.state.features(self.entropy_k)
        # the last `window` tokens, by the vectorised whole-text path (the same values as a StreamState fed them,
        # property-tested; a few times cheaper than pushing them again)
        seg = Segment(text="", side=Side.OUTPUT, tokens=list(self._last), backend="", model="", tokenizer="",  # type: ignore[arg-type]
                      logprob_mode=LogprobMode.RAW, scorer_id="", entropy_k=self.entropy_k)
        return features(seg, self.widths)


def stream_minimum(baseline, tokens: Iterable[Token], check_every: int, window: int | None,
                   min_tokens: int | None = None) -> float:
    """The smallest tail statistic over a stream's checkpoints of at least ``min_tokens`` tokens (1.0: none)."""
    cf = CheckpointFeatures(baseline.widths, baseline.entropy_k, check_every, window)
    low = 1.0
    for t in tokens:
        f = cf.push(t)
        if f is not None and cf.n >= (min_tokens or 1):
            low = min(low, baseline.assess(f, max(baseline.target_alphas)).tail_p)
    return low


def calibrate_stream(baseline, generations: Sequence[Sequence[Token]], *, check_every: int, length: int,
                     temperatures: Sequence[float] = (), notes: Sequence[str] = (),
                     min_tokens: int | None = None, source: Literal["teacher_forced"] | None = None,
                     ) -> StreamCalibration:
    """The calibration of ``baseline``'s whole-stream abort rule on normal generations of at most ``length``
    tokens (apart from the ones its references were fitted on); ``check_every=1``: over every prefix of at least
    ``min_tokens`` tokens (any schedule)."""
    if not generations:
        raise ValueError("stream calibration needs generations")
    minima = sorted(stream_minimum(baseline, list(g)[:length], check_every, length, min_tokens) for g in generations)
    return StreamCalibration(check_every=check_every, calibrated_length=length, n=len(minima),
                             minima=[float(m) for m in minima], temperatures=sorted(set(temperatures)),
                             notes=list(notes), min_tokens=min_tokens, source=source)
