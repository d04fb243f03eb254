"""The streaming assessor (pure): the growing output's signals kept incrementally, assessed every k tokens
against the output baseline, and the whole-stream abort rule.

Checking a growing output at every checkpoint is repeated testing: a per-checkpoint test at alpha would cut far
more than alpha of normal streams.  When the baseline carries a whole-stream calibration
(guardrail.baselines.stream_calibration) for the budget ``abort_p``, a checkpoint aborts when its tail statistic
is at most the calibrated cut-off: P(a normal generation is cut anywhere within the calibrated length) <=
abort_p, at the baseline's check interval (which then overrides the policy's; a calibration over every prefix
holds for any interval, and the policy's is used).  A calibration is used on its own path only: the serving
model's own generations here, answers teacher-forced by the embedded scorer in :class:`TeacherForcedCheckpoints`
(``StreamCalibration.source``).  Without one, the rule is
Bonferroni's: with m checkpoints planned for the request (``ceil(max_tokens / k)``), a checkpoint aborts when its
tail statistic is <= ``abort_p / m`` -- a heuristic: prefixes are judged against whole-output references, so
its realised rate is not controlled (tests/test_stream_calibration.py shows one case 2.5x over budget).

Either way the cut-off is turned once into thresholds on the signals (guardrail.baselines.stream_bounds): a
checkpoint whose signals all sit inside them cannot abort and is decided by those comparisons (~20 µs); only the
others get the full assessment (~0.7 ms), which decides and fills the checkpoint's p-values.  ``full=True``
assesses every checkpoint (the evaluation's per-prefix ablation reads every tail statistic).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..baselines.features import features
from ..baselines.model import Baseline, BaselineError
from ..baselines.stream_bounds import stream_bounds
from ..baselines.stream_calibration import CheckpointFeatures
from ..errors import BackendError, InputError, ModelError
from ..types import Token
from .policy import StreamRules
from .report import Checkpoint, StreamInfo

__all__ = ["StreamAssessor", "TeacherForcedCheckpoints", "settled"]


class StreamAssessor:
    def __init__(self, baseline: Baseline, rules: StreamRules, max_tokens: int, *, full: bool = False,
                 teacher_forced: bool = False) -> None:
        self.baseline, self.rules = baseline, rules
        cal = baseline.stream
        if cal is not None and not cal.serves(teacher_forced, rules.abort_p):
            cal = None  # calibrated for the other path, or no cut-off for this budget
        self.min_tokens = 0
        if cal is not None:
            cut = cal.threshold(rules.abort_p)
            assert cut is not None  # serves() checked it
            # a calibration over every prefix holds for any schedule: the policy's interval is used
            k = rules.check_every if cal.every_prefix else cal.check_every
            window, self.min_tokens = cal.calibrated_length, cal.min_tokens or 0
            m = max(1, math.ceil(max_tokens / k))
            self.info = StreamInfo(check_every=k, abort_p=rules.abort_p, method="calibrated", calibration_n=cal.n,
                                   threshold=cut, planned_checkpoints=m, calibrated_length=window)
        else:
            k, window = rules.check_every, None
            m = max(1, math.ceil(max_tokens / k))
            fitted = baseline.unit.get("max_tokens")
            self.info = StreamInfo(check_every=k, abort_p=rules.abort_p, threshold=rules.abort_p / m,
                                   planned_checkpoints=m, calibrated_length=int(fitted) if fitted else None)
        self.points = CheckpointFeatures(baseline.widths, baseline.entropy_k, k, window)
        self.bounds = None if full else stream_bounds(baseline.calibrator, self.info.threshold)

    @property
    def n(self) -> int:
        return self.points.n

    def push(self, token: Token) -> Checkpoint | None:
        """Feed one output token; every ``check_every`` tokens, the checkpoint (recorded in ``info``)."""
        feats = self.points.push(token)
        return self.check(feats, self.n) if feats is not None else None

    def check(self, feats: dict[str, float], tokens: int, scored: int | None = None) -> Checkpoint:
        """The checkpoint of an output of ``tokens`` tokens whose features are ``feats`` (recorded in ``info``);
        ``scored``: the tokens those features were computed over when they are not the output's own (the
        embedded scorer's tokens of another backend's answer).  A prefix shorter than the calibration's
        ``min_tokens`` is never cut (it took no part in the calibration)."""
        scored = tokens if scored is None else scored
        if scored < self.min_tokens or (self.bounds is not None and self.bounds.clear(feats)):
            cp = Checkpoint(tokens=tokens)
            self.info.cleared += 1
        else:
            # p-value and tail statistic do not depend on alpha; a budget below what the baseline was fitted for must
            # not make the assessment refuse mid-stream (the abort compares tail_p with the threshold)
            a = self.baseline.assess(feats, max(self.baseline.target_alphas))
            cp = Checkpoint(tokens=tokens, p_value=a.p_value, tail_p=a.tail_p, top_signal=a.top_signal,
                            abort=a.tail_p <= self.info.threshold)
        self.info.checkpoints.append(cp)
        if self.info.calibrated_length is not None and scored > self.info.calibrated_length:
            self.info.beyond_calibrated = True
        if cp.abort and self.info.aborted_at is None:
            self.info.aborted_at = tokens
        return cp


class TeacherForcedCheckpoints:
    """Checkpoints of another backend's stream judged by the embedded scorer (the policy's ``embedded_every``):
    every k streamed tokens the answer so far is teacher-forced as the reply to the conversation and its
    features assessed against the output baseline.

    With a baseline calibrated over every prefix (``stream.every_prefix``: the shipped teacher-forced output
    baseline, on reference answers apart from its fitting ones) the abort rule is that calibration's: a
    checkpoint falls wherever the other backend's tokens end, and any such schedule is covered.  A checkpoint
    judges the scorer's settled tokens only (:func:`settled`: those before the text's last whitespace; the last
    word may be cut mid-way and would tokenize otherwise once finished), so the tokens judged are a prefix of the
    finished answer's, as calibrated; past the calibrated length the last ``calibrated_length`` of them are.  The
    unjudged last word is released with the checkpoint.  Otherwise (a calibration for a model's own generations,
    or none) the rule is Bonferroni's over the planned checkpoints.

    A scorer with reply sessions (the embedded one: llama_sessions) decodes at each checkpoint only what is new
    since the last one; another re-scores the whole answer so far, so its model time grows with the square of
    the answer's length.  A checkpoint the scorer cannot score (an answer of whitespace so far, the scorer busy)
    is skipped; the end of the stream is judged whole, afresh, either way.  :meth:`aclose` frees the session."""

    def __init__(self, baseline: Baseline, rules: StreamRules, max_tokens: int, scorer: Any,
                 messages: Sequence[Mapping[str, Any]]) -> None:
        every = rules.embedded_every
        if every < 1:
            raise ValueError("TeacherForcedCheckpoints needs stream.embedded_every >= 1")
        cal = baseline.stream
        self.cal = cal if cal is not None and cal.serves(True, rules.abort_p) else None
        self.assessor = StreamAssessor(baseline if self.cal else baseline.model_copy(update={"stream": None}),
                                       rules.model_copy(update={"check_every": every}), max_tokens,
                                       teacher_forced=True)
        self.info = self.assessor.info
        self.scorer, self.messages, self.every = scorer, list(messages), every
        self.text, self.n = "", 0
        # a session per stream where the scorer keeps them (a process-wide counter names it)
        self.session = f"stream-{next(_SESSIONS)}" if hasattr(scorer, "end_session") else None

    async def push(self, text: str) -> Checkpoint | None:
        """Feed one streamed token's text; every ``embedded_every`` tokens, the checkpoint (or None if skipped)."""
        self.text += text
        self.n += 1
        if self.n % self.every or not self.text.strip():
            return None
        try:
            if self.session is not None:
                seg = await self.scorer.score_reply(self.messages, self.text, session=self.session)
            else:
                seg = await self.scorer.score_reply(self.messages, self.text)
            self.assessor.baseline.check_segment(seg, "stream checkpoint")
        except (BackendError, InputError, BaselineError, ModelError):  # skipped: the end is judged whole anyway
            return None
        scored = None
        if self.cal is not None:  # the settled tokens, at most the calibrated length of them
            scored = settled(seg.tokens, self.text)
            tokens = seg.tokens[max(0, scored - self.cal.calibrated_length):scored]
            seg = dataclasses.replace(seg, tokens=tokens)
            if scored < (self.cal.min_tokens or 1):
                return None
        feats = features(seg, self.assessor.baseline.widths, only=self.assessor.baseline.calibrator.inputs)
        return self.assessor.check(feats, self.n, scored) if feats is not None else None

    async def aclose(self) -> None:
        """Free the scorer's session (once; a scorer that cannot is left to evict it)."""
        session, self.session = self.session, None
        if session is not None:
            try:
                await self.scorer.end_session(session)
            except (BackendError, InputError):
                pass


def settled(tokens: Sequence[Token], text: str) -> int:
    """How many of the scorer's tokens of a growing ``text`` are settled: those that end at or before its last
    whitespace character.  A GPT-2-style tokenizer starts a pre-token at whitespace and encodes each pre-token on
    its own, so those tokens stay as they are however the text goes on, and they are a prefix of the finished
    answer's tokens; the last word, possibly cut mid-way ("The photosynth" reads " photos", "yn", "th" where the
    finished word is one token), is not judged yet.  Tokens without character offsets: all but the last."""
    if not tokens or tokens[-1].end <= 0:  # no offsets (a text's last token ends past 0)
        return max(0, len(tokens) - 1)
    p = next((i for i in range(len(text) - 1, -1, -1) if text[i].isspace()), -1)
    k = len(tokens)
    while k and tokens[k - 1].end > p:
        k -= 1
    return k


_SESSIONS = itertools.count()
