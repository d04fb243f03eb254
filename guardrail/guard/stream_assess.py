"""The streaming assessor (pure): the growing output's signals kept incrementally, assessed every k tokens
against the output baseline, and the whole-stream abort rule.

Checking a growing output at every checkpoint is repeated testing: a per-checkpoint test at alpha would cut far
more than alpha of normal streams.  The rule here is Bonferroni's: with m checkpoints planned for the request
(``ceil(max_tokens / k)``), a checkpoint aborts when its tail statistic is <= ``abort_p / m``, so summed over
the stream the false-abort chance stays near ``abort_p``.  The tail statistic is the conformal p-value made
continuous below its resolution (a ranking there, not a guarantee), which is why the realised false-abort rate
on held-back normal generations is measured (scripts/stream_abort_eval.py) rather than assumed.
"""

from __future__ import annotations

import math

from ..baselines.model import Baseline
from ..baselines.stream_state import StreamState
from ..types import Token
from .policy import StreamRules
from .report import Checkpoint, StreamInfo

__all__ = ["StreamAssessor"]


class StreamAssessor:
    def __init__(self, baseline: Baseline, rules: StreamRules, max_tokens: int) -> None:
        self.baseline, self.rules = baseline, rules
        self.state = StreamState(baseline.widths)
        m = max(1, math.ceil(max_tokens / rules.check_every))
        cal = baseline.unit.get("max_tokens")
        self.info = StreamInfo(check_every=rules.check_every, abort_p=rules.abort_p, threshold=rules.abort_p / m,
                               planned_checkpoints=m, calibrated_length=int(cal) if cal else None)
        self.n = 0

    def push(self, token: Token) -> Checkpoint | None:
        """Feed one output token; every ``check_every`` tokens, the checkpoint (recorded in ``info``)."""
        self.state.push(token)
        self.n += 1
        return self.check() if self.n % self.rules.check_every == 0 else None

    def check(self) -> Checkpoint | None:
        feats = self.state.features(self.baseline.entropy_k)
        if feats is None:
            return None
        a = self.baseline.assess(feats, self.rules.abort_p)
        cp = Checkpoint(tokens=self.n, p_value=a.p_value, tail_p=a.tail_p, top_signal=a.top_signal,
                        abort=a.tail_p <= self.info.threshold)
        self.info.checkpoints.append(cp)
        if self.info.calibrated_length is not None and self.n > self.info.calibrated_length:
            self.info.beyond_calibrated = True
        if cp.abort and self.info.aborted_at is None:
            self.info.aborted_at = self.n
        return cp
