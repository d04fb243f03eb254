"""Incremental signals: a stream state fed one normalized token at a time, giving at any moment the same feature
vector :func:`~guardrail.baselines.features.features` computes on the whole prefix (property-tested to 1e-9
relative), with O(1) amortised work per token and no pass over the prefix.

What it keeps: the last ``max(widths) + 1`` cumulative NLL sums (every window sum is a difference of two, as the
whole-text path computes them, so the values agree bit for bit); each width's running max/min window and its
token span; the whole-text totals; the excess-surprise walks of both CUSUMs with their running minimum and
largest rise; the distinct token keys seen; the last four keys with the current and longest repeat runs; the
last 16 keys with, per lag, the match bits of the last 32 positions and their sum (``lag_repeat``).
``spike_frac`` compares every width-8 window with the text's *own current* mean, which moves with every token:
it cannot be kept as a running count, so the state keeps the width-8 window means (one float per token) and
counts them when asked (kept sorted: one bisection per snapshot).  The T = 0.7 own-generation baseline's detector
reads it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence

from ..types import Flag, Token
from .features import CUSUM_DRIFT, EXCESS_DRIFT, LAG_MAX, LAG_WINDOW, REPEAT_PERIOD, SAME_RUN_FREE

__all__ = ["StreamState"]

_LN2 = math.log(2.0)


class _Cusum:
    __slots__ = ("best", "c", "drift", "low", "n")

    def __init__(self, drift: float) -> None:
        self.drift, self.c, self.low, self.best, self.n = drift, 0.0, 0.0, 0.0, 0

    def push(self, nll: float, entropy: float) -> None:
        self.c += nll - entropy - self.drift
        self.n += 1
        if self.c < self.low:
            self.low = self.c
        if self.c - self.low > self.best:
            self.best = self.c - self.low

    @property
    def value(self) -> float:
        return self.best if self.n else math.nan


class _Run:
    """Longest run of tokens each equal to one of the ``period`` tokens before it."""

    __slots__ = ("best", "cur", "last", "period")

    def __init__(self, period: int) -> None:
        self.period, self.last, self.cur, self.best = period, deque(maxlen=period), 0, 0

    def push(self, key: int) -> None:
        if key in self.last:
            self.cur += 1
            if self.cur > self.best:
                self.best = self.cur
        else:
            self.cur = 0
        self.last.appendleft(key)


class _Lags:
    """Per lag p = 1..LAG_MAX: the number of the last LAG_WINDOW positions whose key equals the key p before it,
    and the largest such count so far.  Plain Python over bitmasks (one int per position: bit p-1 set when it
    matched at lag p): ~1.6 µs a token here, where numpy's per-call overhead on 16-element arrays cost ~13."""

    def __init__(self) -> None:
        self.last = [-1] * LAG_MAX  # last[p - 1]: the key p positions back (-1: none)
        self.rows = [0] * LAG_WINDOW  # ring: the match mask of each of the last LAG_WINDOW positions
        self.sums = [0] * LAG_MAX
        self.pos = 0
        self.best = 0

    def push(self, key: int) -> None:
        mask = 0
        for p, k in enumerate(self.last):
            if k == key:
                mask |= 1 << p
        old = self.rows[self.pos]
        diff = mask ^ old
        while diff:  # only the lags whose bit changes move their count
            low = diff & -diff
            self.sums[low.bit_length() - 1] += 1 if mask & low else -1
            diff ^= low
        if mask:
            self.best = max(self.best, max(self.sums))
        self.rows[self.pos] = mask
        self.pos = (self.pos + 1) % LAG_WINDOW
        self.last.pop()
        self.last.insert(0, key)


class StreamState:
    def __init__(self, widths: Sequence[int] = (8, 16, 32)) -> None:
        self.widths = tuple(int(w) for w in widths)
        self._wmax = max(self.widths)
        self._cum: deque[float] = deque([0.0], maxlen=max(self._wmax, 8) + 1)  # the last cumulative sums
        self.n_scored = 0
        self.n_tokens = 0
        self.total = 0.0
        self.nbytes = 0
        self._ent_sum, self._ent_n = 0.0, 0
        self.n_clamped = self.n_missing = 0
        self._max = {w: (-math.inf, 0, 0) for w in self.widths}  # value, token start, token end (exclusive)
        self._min = {w: (math.inf, 0, 0) for w in self.widths}
        self._scored_at: deque[int] = deque(maxlen=self._wmax)  # token indices of the last scored tokens
        self._m8: list[float] = []
        self._cusum, self._excess = _Cusum(CUSUM_DRIFT), _Cusum(EXCESS_DRIFT)
        self._keys: dict[bytes, int] = {}
        self._rep, self._same = _Run(REPEAT_PERIOD), _Run(1)
        self._lags = _Lags()

    def push(self, t: Token) -> None:
        """Feed one token (in order).  O(number of widths)."""
        i = self.n_tokens
        self.n_tokens += 1
        key = self._keys.setdefault(t.bytes, len(self._keys))
        self._rep.push(key)
        self._same.push(key)
        self._lags.push(key)
        if t.entropy is not None and not math.isnan(t.entropy):
            self._ent_sum += t.entropy
            self._ent_n += 1
        if not t.scored:
            if Flag.SPECIAL in t.flags:
                pass
            elif Flag.CLAMPED in t.flags:
                self.n_clamped += 1
            elif Flag.NO_CONTEXT not in t.flags:
                self.n_missing += 1
            return
        nll = -float(t.logprob)  # type: ignore[arg-type]
        self.n_scored += 1
        self.total += nll
        self.nbytes += len(t.bytes)
        self._cum.append(self._cum[-1] + nll)
        self._scored_at.append(i)
        n = self.n_scored
        for w in self.widths:
            if n >= w:
                s = self._cum[-1] - self._cum[-1 - w]
                m = s / w
                start = self._scored_at[-w]
                if m > self._max[w][0]:
                    self._max[w] = (m, start, i + 1)
                if m < self._min[w][0]:
                    self._min[w] = (m, start, i + 1)
        if n >= 8:
            bisect.insort(self._m8, (self._cum[-1] - self._cum[-9]) / 8)
        if t.entropy is not None and not math.isnan(t.entropy):
            self._cusum.push(nll, t.entropy)
            self._excess.push(nll, t.entropy)

    def extend(self, tokens: Sequence[Token]) -> None:
        for t in tokens:
            self.push(t)

    def window(self, width: int, which: str = "max") -> tuple[float, int, int] | None:
        """(mean NLL, token start, token end) of the top (or bottom) window of ``width``; a prefix shorter than
        the width has one window over all its scored tokens (token span: the whole prefix)."""
        if not self.n_scored:
            return None
        if self.n_scored < width:
            return self.total / self.n_scored, 0, self.n_tokens
        return (self._max if which == "max" else self._min)[width]

    def features(self, entropy_k: int | None = None) -> dict[str, float] | None:
        """What :func:`~guardrail.baselines.features.features` gives on the prefix seen so far (None: nothing
        scored yet)."""
        n = self.n_scored
        if n == 0:
            return None
        mean = self.total / n
        out: dict[str, float] = {}
        for w in self.widths:
            out[f"max_w{w}"] = mean if n < w else self._max[w][0]
        for w in self.widths:
            out[f"min_w{w}"] = mean if n < w else self._min[w][0]
        # spike_frac: the share of width-8 window means above the current mean + 2 nats (one window of the prefix
        # below 8 scored tokens): the means are kept sorted, so the count is one bisection
        m8 = len(self._m8)
        spikes = (m8 - bisect.bisect_right(self._m8, mean + 2.0)) / m8 if m8 else 0.0
        out.update(
            whole_nll=mean,
            bits_per_byte=self.total / _LN2 / (self.nbytes or 1),
            mean_entropy=self._ent_sum / self._ent_n if self._ent_n else math.nan,
            distinct=len(self._keys) / self.n_tokens if self.n_tokens else 1.0,
            spike_frac=spikes,
            excluded_frac=(self.n_clamped + self.n_missing) / self.n_tokens if self.n_tokens else 0.0,
            surprise_cusum=self._cusum.value,
            repeat_run=float(self._rep.best),
            excess_cusum=self._excess.value,
            same_run=float(max(0, self._same.best + 1 - SAME_RUN_FREE) if self.n_tokens else 0),
            lag_repeat=float(self._lags.best),
        )
        out["n_scored"] = float(n)
        if entropy_k is not None:
            out["entropy_k"] = float(entropy_k)
        return out
