"""Pure numpy scoring core: no I/O, no model, no backend.

Definitions (all in nats unless the name says bits):

* **token NLL** ``-logprob`` of each *scored* token.  Excluded tokens -- missing value, clamped at -9999
  (true value -inf), unpredicted first token, special/template tokens -- are dropped from every mean and
  counted by reason.  Nothing missing ever counts as 0.
* **window NLL** for width ``w``: the mean NLL of ``w`` consecutive *scored* tokens (excluded tokens are
  skipped, not zero-filled), computed for every position in O(N) from one cumulative sum.  Its character span
  runs from the first to the last token of the window.  **Window PPL** = ``exp(window NLL)``.
* A text with fewer scored tokens than ``w`` has exactly one window, over all its scored tokens, reported with
  ``effective_width < width`` (``short``); a text with no scored token is **unscorable**: ``whole`` and the
  windows are ``None``, never 0.
* **whole** NLL / PPL: mean over all scored tokens.  **bits per byte**: total NLL / ln 2 / UTF-8 bytes of the
  scored tokens -- the one figure comparable across tokenizers.
* **entropy**: mean per-token entropy of the predictive distribution where the backend gave one; computed
  from the top-k alternatives it is a lower bound, and ``entropy_k`` records k.
"""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from .errors import ConfigError
from .types import Flag, Segment

__all__ = [
    "DEFAULT_WIDTHS",
    "TextScore",
    "TokenArrays",
    "WholeStats",
    "WindowStat",
    "check_widths",
    "entropy_from_top",
    "score_arrays",
    "score_segment",
    "window_means",
]

DEFAULT_WIDTHS: tuple[int, ...] = (8, 16, 32)
LN2 = math.log(2.0)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
            raise ConfigError(f"window width must be an integer >= 1, got {w!r}")
        if int(w) not in out:
            out.append(int(w))
    if not out:
        raise ConfigError("at least one window width is required")
    return tuple(out)


def window_means(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of every run of ``width`` consecutive values, O(N) via one cumulative sum.

    Returns ``len(values) - width + 1`` means (empty when the input is shorter than ``width``).
    """
    v = np.asarray(values, dtype=np.float64)
    if width < 1:
        raise ConfigError(f"window width must be an integer >= 1, got {width!r}")
    return _means(_cumsum(v), width)


_scratch = threading.local()


def _buffer(name: str, n: int) -> np.ndarray:
    """Per-thread scratch array of at least ``n`` float64: fresh large arrays cost page faults that
    dominate these microsecond-scale loops."""
    buf = getattr(_scratch, name, None)
    if buf is None or buf.shape[0] < n:
        buf = np.empty(max(n, 4096), dtype=np.float64)
        setattr(_scratch, name, buf)
    return buf[:n]


def _cumsum(v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    c = np.empty(v.shape[0] + 1, dtype=np.float64) if out is None else out
    c[0] = 0.0
    np.add.accumulate(v, out=c[1:])  # = np.cumsum, without its Python wrapper
    return c


def _means(c: np.ndarray, width: int) -> np.ndarray:
    if c.shape[0] - 1 < width:
        return np.empty(0, dtype=np.float64)
    return (c[width:] - c[:-width]) / width


def entropy_from_top(top_logprobs: np.ndarray) -> float:
    """Entropy lower bound ``-sum p log p`` over the listed alternatives only (each term is >= 0)."""
    lp = np.asarray(top_logprobs, dtype=np.float64)
    lp = lp[np.isfinite(lp)]
    return float(-(np.exp(lp) * lp).sum())


class TokenArrays(BaseModel, arbitrary_types_allowed=True):
    """Column view of a segment: what the pure functions consume."""

    nll: np.ndarray  # float64, NaN where excluded
    start: np.ndarray  # int64 char offsets
    end: np.ndarray
    nbytes: np.ndarray  # int64 UTF-8 bytes per token
    entropy: np.ndarray  # float64, NaN where unknown
    n_clamped: int = 0
    n_missing: int = 0
    n_special: int = 0
    n_no_context: int = 0
    # one integer per token, equal exactly for tokens with equal bytes (features.token_keys), and how many
    # distinct ones there are; None until something needs them (the repetition signals)
    keys: np.ndarray | None = None
    n_distinct: int | None = None

    @classmethod
    def of(cls, seg: Segment) -> TokenArrays:
        """The segment's columns, made once per token list: what a backend attached (built from its own arrays,
        no pass over the tokens), else :meth:`from_segment`, kept on the segment for the next reader."""
        c = seg.columns
        if c is not None and c[0] is seg.tokens and c[1] == len(seg.tokens):
            return c[2]
        a = cls.from_segment(seg)
        a.attach(seg)
        return a

    def attach(self, seg: Segment) -> None:
        """Keep these columns on ``seg`` (they must be its tokens' columns: tests compare with from_segment)."""
        seg.columns = (seg.tokens, len(seg.tokens), self)

    @classmethod
    def from_values(cls, logprob: np.ndarray, entropy: np.ndarray, start: np.ndarray, end: np.ndarray,
                    nbytes: np.ndarray, *, special: np.ndarray | None = None, no_context: np.ndarray | None = None,
                    keys: np.ndarray | None = None) -> TokenArrays:
        """Columns straight from a backend's own arrays, one entry per token (no pass over Token objects): the
        values :meth:`from_segment` gives for the segment the backend builds from them.  ``logprob`` NaN: no
        value (missing); ``special`` and ``no_context``: masks of tokens not scored for that reason (a special
        token counts as special first, as in from_segment); ``keys`` as features.token_keys compares them."""
        nll = -np.asarray(logprob, dtype=np.float64)
        missing = np.isnan(nll)
        n_special = n_no_context = 0
        if special is not None and special.any():
            nll[special] = math.nan
            n_special = int(special.sum())
            missing &= ~special
        if no_context is not None and no_context.any():
            only = no_context if special is None else no_context & ~special
            n_no_context = int(only.sum())
            nll[only] = math.nan
            missing &= ~no_context
        return cls(nll=nll, start=np.asarray(start, dtype=np.int64), end=np.asarray(end, dtype=np.int64),
                   nbytes=np.asarray(nbytes, dtype=np.int64), entropy=np.asarray(entropy, dtype=np.float64),
                   n_missing=int(missing.sum()), n_special=n_special, n_no_context=n_no_context, keys=keys,
                   n_distinct=None if keys is None else int(np.unique(keys).size))

    @classmethod
    def from_segment(cls, seg: Segment) -> TokenArrays:
        toks = seg.tokens
        n = len(toks)
        # one C-level pass per column (the request path's hot loop); None reads as NaN in a float array
        nll = -np.array(list(map(_LOGPROB, toks)), dtype=np.float64).reshape(n)
        flagged = [i for i, f in enumerate(map(_FLAGS, toks)) if f]
        special = [i for i in flagged if Flag.SPECIAL in toks[i].flags]
        nll[special] = math.nan  # a special token is not user text, whatever its value
        start = np.fromiter(map(_START, toks), dtype=np.int64, count=n)
        end = np.fromiter(map(_END, toks), dtype=np.int64, count=n)
        nbytes = np.fromiter(map(len, map(_BYTES, toks)), dtype=np.int64, count=n)
        ent = np.array(list(map(_ENTROPY, toks)), dtype=np.float64).reshape(n)
        counts = {Flag.CLAMPED: 0, Flag.MISSING: 0, Flag.SPECIAL: 0, Flag.NO_CONTEXT: 0}
        for i in np.flatnonzero(np.isnan(nll)).tolist():  # the few unscored tokens: why each one is
            flags = toks[i].flags
            for f in (Flag.SPECIAL, Flag.CLAMPED, Flag.NO_CONTEXT, Flag.MISSING):
                if f in flags:
                    counts[f] += 1
                    break
            else:
                counts[Flag.MISSING] += 1
        return cls(
            nll=nll, start=start, end=end, nbytes=nbytes, entropy=ent,
            n_clamped=counts[Flag.CLAMPED], n_missing=counts[Flag.MISSING],
            n_special=counts[Flag.SPECIAL], n_no_context=counts[Flag.NO_CONTEXT],
        )


_START, _END, _BYTES, _ENTROPY, _LOGPROB, _FLAGS = (
    operator.attrgetter(k) for k in ("start", "end", "bytes", "entropy", "logprob", "flags"))


class WholeStats(BaseModel):
    nll: float | None
    ppl: float | None
    bits_per_byte: float | None
    n_tokens: int
    n_scored: int
    n_excluded: int
    n_clamped: int
    n_missing: int
    n_special: int
    n_no_context: int
    mean_entropy: float | None = None
    entropy_k: int | None = None


class WindowStat(BaseModel):
    width: int
    effective_width: int  # < width when the text has fewer scored tokens than the window
    nll: float
    ppl: float
    start: int  # char span of the top window, end exclusive
    end: int
    token_start: int  # token index span of the top window, end exclusive
    token_end: int

    @property
    def short(self) -> bool:
        return self.effective_width < self.width


class TextScore(BaseModel):
    whole: WholeStats
    windows: list[WindowStat]  # top window per width, in the order of the widths asked
    max_window: WindowStat | None  # the top window of the first width

    @property
    def scorable(self) -> bool:
        return self.whole.n_scored > 0


def _ppl(nll: float) -> float:
    return math.exp(nll) if nll < 700 else math.inf


def score_arrays(
    a: TokenArrays, widths: Sequence[int] = DEFAULT_WIDTHS, entropy_k: int | None = None, *, curves: bool = False
) -> tuple[TextScore, dict[int, np.ndarray]]:
    """Score one segment's columns.  Returns the summary and, with ``curves=True``, per width the window NLL
    at every scored-token position (for plots and the terminal view)."""
    widths = check_widths(widths)
    n = int(a.nll.shape[0])
    missing = np.isnan(a.nll)
    valid = np.flatnonzero(~missing) if missing.any() else np.arange(n)
    n_scored = int(valid.shape[0])
    ent = a.entropy[~np.isnan(a.entropy)]
    whole = WholeStats(
        nll=None, ppl=None, bits_per_byte=None, n_tokens=n, n_scored=n_scored,
        n_excluded=n - n_scored, n_clamped=a.n_clamped, n_missing=a.n_missing,
        n_special=a.n_special, n_no_context=a.n_no_context,
        mean_entropy=float(ent.mean()) if ent.size else None,
        entropy_k=entropy_k if ent.size else None,
    )
    if n_scored == 0:
        return TextScore(whole=whole, windows=[], max_window=None), {}
    v = a.nll[valid] if n_scored < n else a.nll
    total = float(v.sum())
    nb = int(a.nbytes[valid].sum()) if n_scored < n else int(a.nbytes.sum())
    whole.nll = total / n_scored
    whole.ppl = _ppl(whole.nll)
    whole.bits_per_byte = total / LN2 / nb if nb else None
    c = _cumsum(v, _buffer("cumsum", n_scored + 1))
    windows: list[WindowStat] = []
    out: dict[int, np.ndarray] = {}
    for w in widths:
        eff = min(w, n_scored)
        sums = np.subtract(c[eff:], c[:-eff], out=_buffer("sums", n_scored - eff + 1))  # argmax needs no division
        i = int(np.argmax(sums))  # first maximum
        first, last = int(valid[i]), int(valid[i + eff - 1])
        m = float(sums[i]) / eff
        windows.append(WindowStat(
            width=w, effective_width=eff, nll=m, ppl=_ppl(m),
            start=int(a.start[first]), end=int(a.end[last]), token_start=first, token_end=last + 1,
        ))
        if curves:
            out[w] = sums / eff
    return TextScore(whole=whole, windows=windows, max_window=windows[0]), out


def score_segment(seg: Segment, widths: Sequence[int] = DEFAULT_WIDTHS) -> TextScore:
    score, _ = score_arrays(TokenArrays.from_segment(seg), widths, seg.entropy_k)
    return score
