"""Signals and the feature vector of one scored text (pure numpy).

Signals are what baselines calibrate; each has the tail(s) that make it suspicious:

=================  ======  ==================================================================================
``max_w{w}``       high    top window NLL at width w: a burst of surprising tokens (GCG suffix, corruption)
``min_w{w}``       low     lowest window NLL: a stretch the model finds abnormally predictable (filler, loops)
``whole_nll``      both    mean NLL of the whole text
``bits_per_byte``  both    tokenizer-independent surprise
``mean_entropy``   both    mean entropy of the predictive distribution (exact or a top-k lower bound)
``distinct``       low     distinct tokens / tokens: repetition
``spike_frac``     high    share of width-8 windows more than 2 nats above the text's own mean
``excluded_frac``  high    share of tokens with no usable logprob (clamped, missing)
``surprise_cusum`` high    largest sum, over any stretch, of (surprise - entropy - 1 nat): an upper CUSUM of the
                           tokens' excess surprise over what the model itself expected; integrates a long
                           anomalous stretch (an optimised suffix) that a short benign spike cannot match
``repeat_run``     high    longest run of tokens each repeating one of the 4 before it (``! ! ! !`` filler,
                           short loops): abnormal repetition that a perplexity spike never shows
``excess_cusum``   high    the surprise CUSUM with a drift of 2.2 nats (the mean benign excess plus half its
                           standard deviation, as the CPD comparator): only a stretch of tokens each well beyond
                           what the model expected accumulates, so a short string of rare names cannot reach what
                           an optimised suffix reaches, and no length normalisation is needed
``same_run``       high    how far the longest run of identical consecutive tokens goes beyond 16: 0 for ordinary
                           text (over 26,000 development texts of 22 kinds, pasted docs, code, contracts and
                           chat answers among them, the longest run is 11 tokens; a ``!`` filler runs 22-25:
                           scripts/run_lengths.py)
``lag_repeat``     high    the most positions, within any 32 consecutive tokens, at which a token equals the token
                           exactly p before it, over lags p = 1..16: a periodic stretch (a loop, even one with a
                           changing counter) scores near 32, ordinary text 1-8

Repetition signals compare tokens by their bytes, which every backend returns (an OpenAI-compatible server gives
token text, not ids), so they mean the same through vLLM, llama.cpp servers and the embedded scorer.
=================  ======  ==================================================================================

Texts shorter than a width use one window over all their tokens (see guardrail.scoring).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np

from ..scoring import TokenArrays, _cumsum, _means
from ..types import Segment

__all__ = ["FEATURE_TAILS", "Tail", "cusum_stretch", "feature_names", "features", "lag_repeat", "repeat_run", "surprise_cusum", "token_keys"]

Tail = Literal["high", "low", "both"]

# the ufuncs' own reductions: what ndarray.max() / .sum() / .any() / np.cumsum call, without their Python wrappers
# (the same arithmetic, a microsecond less per call on the request path)
_MAX, _MIN, _SUM, _ANY, _ACC = (np.maximum.reduce, np.minimum.reduce, np.add.reduce, np.logical_or.reduce,
                                np.add.accumulate)

FEATURE_TAILS: dict[str, Tail] = {
    "whole_nll": "both", "bits_per_byte": "both", "mean_entropy": "both", "distinct": "low",
    "spike_frac": "high", "excluded_frac": "high", "repeat_run": "high",
    "surprise_cusum": "high", "excess_cusum": "high", "same_run": "high", "lag_repeat": "high",
}
CUSUM_DRIFT = 1.0  # nats subtracted per token: above the benign mean excess (~0.7 nats), so a normal text drifts down
EXCESS_DRIFT = 2.2  # nats: benign mean excess 0.73 + 0.5 x its sd 2.93 (dev benign tokens; the CPD comparator's k=0.5)
SAME_RUN_FREE = 16  # identical consecutive tokens tolerated before same_run counts (scripts/run_lengths.py)

REPEAT_PERIOD = 4
LAG_MAX, LAG_WINDOW = 16, 32  # lag_repeat: lags 1..16, windows of 32 positions


def feature_names(widths: Sequence[int]) -> list[str]:
    return [f"max_w{w}" for w in widths] + [f"min_w{w}" for w in widths] + list(FEATURE_TAILS)


def tail_of(name: str) -> Tail:
    if name == "detector":  # the multivariate detector's score (see detector.py)
        return "high"
    if name.startswith("max_w"):
        return "high"
    if name.startswith("min_w"):
        return "low"
    return FEATURE_TAILS[name]


def _lag_equal(keys: np.ndarray, lags: int) -> np.ndarray:
    """(lags, n) bool: row j says, per position i, whether keys[i] equals the key ``lags - j`` before it (False
    before the text starts: the padding is below every key)."""
    n = int(keys.shape[0])
    keys = keys.astype(np.int64, copy=False)
    low = int(keys.min())
    padded = np.concatenate((np.full(lags, -1 if low >= 0 else low - 1, dtype=np.int64), keys))
    step = padded.strides[0]  # row j: keys[j - lags .. j - lags + n) (a strided view, no copy)
    view = np.ndarray(shape=(lags, n), dtype=np.int64, buffer=padded, strides=(step, step))
    return view == padded[lags:]


def _longest_run(hit: np.ndarray) -> int:
    if not _ANY(hit):
        return 0
    # run lengths of True: positions where a run starts / ends
    b = np.concatenate(([0], hit.view(np.int8), [0]))
    edges = (b[1:] != b[:-1]).nonzero()[0]  # = np.flatnonzero(np.diff(b))
    return int(_MAX(edges[1::2] - edges[::2]))


def _window_max(eq: np.ndarray, window: int) -> int:
    """max over rows and windows of ``window`` consecutive positions (all of them when fewer) of the True count."""
    lags, n = eq.shape
    c = np.zeros((lags, n + 1), dtype=np.int32)
    eq.cumsum(axis=1, out=c[:, 1:])
    w = min(window, n)
    return int(_MAX(c[:, w:] - c[:, :-w], axis=None))


def repeat_run(ids: np.ndarray, period: int = REPEAT_PERIOD) -> int:
    """Longest run of positions i whose token equals the token at i - p for some p in 1..period."""
    n = int(ids.shape[0])
    if n < 2:
        return 0
    return _longest_run(_lag_equal(ids, min(period, n - 1)).any(axis=0))


def lag_repeat(keys: np.ndarray, max_lag: int = LAG_MAX, window: int = LAG_WINDOW) -> int:
    """max over lags p <= max_lag and windows of ``window`` consecutive positions of the number of positions i in
    the window with keys[i] == keys[i - p] (a text shorter than the window: all its positions).

    All lags at once (one row per lag); a window reaching before position p only adds False, so windows over all
    positions give the same maximum as windows over positions p..n-1."""
    n = int(keys.shape[0])
    lags = min(max_lag, n - 1)
    if lags < 1:
        return 0
    return _window_max(_lag_equal(keys, lags), window)


def token_keys(seg: Segment) -> np.ndarray:
    """One integer per token, equal for tokens with equal bytes (what every backend returns, unlike ids): the
    distinct byte strings numbered 0, 1, ... in order of first appearance."""
    index: dict[bytes, int] = {}
    return np.array([index.setdefault(b, len(index)) for b in map(_BYTES, seg.tokens)], dtype=np.int64)


_BYTES = operator.attrgetter("bytes")


def _excess_walk(nll: np.ndarray, entropy: np.ndarray, drift: float) -> tuple[np.ndarray | None, np.ndarray]:
    """Indices of the tokens with both values (None: every token has both), and the walk ``c_0 = 0, c_k = sum
    of their first k excesses`` (surprise - entropy - drift): the CUSUM is the largest rise of ``c`` over its
    running minimum."""
    d = nll - entropy
    gap = np.isnan(d)
    ok = None
    if _ANY(gap):
        ok = (~gap).nonzero()[0]
        d = d[ok]
    c = np.empty(d.shape[0] + 1, dtype=np.float64)
    c[0] = 0.0
    _ACC(d - drift, out=c[1:])  # = np.cumsum
    return ok, c


def surprise_cusum(nll: np.ndarray, entropy: np.ndarray, drift: float = CUSUM_DRIFT) -> float:
    """max over i <= j of sum_{t=i..j} (nll_t - entropy_t - drift), 0 for none (NaN without entropies)."""
    _, c = _excess_walk(nll, entropy, drift)
    if c.shape[0] == 1:
        return float("nan")
    return float(_MAX(c - np.minimum.accumulate(c)))


def cusum_stretch(nll: np.ndarray, entropy: np.ndarray, drift: float) -> tuple[int, int] | None:
    """Token indices ``[i, j)`` of the stretch that gives :func:`surprise_cusum` its value (the whole anomalous
    stretch, not one window), None when nothing accumulates.  Tokens without a value are skipped, not cut."""
    ok, c = _excess_walk(nll, entropy, drift)
    if c.shape[0] == 1:
        return None
    low = np.minimum.accumulate(c)
    end = int((c - low).argmax())
    if c[end] - low[end] <= 0:
        return None
    start = int(np.flatnonzero(c[: end + 1] == low[end])[-1])  # the last minimum before the peak
    return (start, end) if ok is None else (int(ok[start]), int(ok[end - 1]) + 1)


def _wanted(only: Collection[str] | None):
    """``want(*names)``: whether any of these signals is asked for."""
    if only is None:
        return lambda *names: True
    asked = frozenset(only)
    return lambda *names: not asked.isdisjoint(names)


def _repetition(keys: np.ndarray, want) -> dict[str, float]:
    """repeat_run, same_run and lag_repeat, as wanted, from one table of lag matches (lags 1..16 cover the
    4 that repeat_run reads and the 1 that same_run reads; only as many lags as the wanted signals read)."""
    n = int(keys.shape[0])
    need = LAG_MAX if want("lag_repeat") else REPEAT_PERIOD if want("repeat_run") else 1
    lags = min(need, n - 1)
    out: dict[str, float] = {}
    if lags < 1:  # one token (or none): nothing repeats
        for k, v in (("repeat_run", 0.0), ("same_run", 0.0), ("lag_repeat", 0.0)):
            if want(k):
                out[k] = v
        return out
    eq = _lag_equal(keys, lags)  # row lags - p: lag p
    if want("repeat_run"):
        out["repeat_run"] = float(_longest_run(eq[lags - min(REPEAT_PERIOD, lags):].any(axis=0)))
    if want("same_run"):
        out["same_run"] = float(max(0, _longest_run(eq[lags - 1]) + 1 - SAME_RUN_FREE))
    if want("lag_repeat"):
        out["lag_repeat"] = float(_window_max(eq, LAG_WINDOW))
    return out


def features(seg: Segment, widths: Sequence[int], arrays: TokenArrays | None = None,
             only: Collection[str] | None = None) -> dict[str, float] | None:
    """Feature dict of a segment, or None when it is unscorable (no token with a logprob).  ``arrays``: the
    segment's column view when the caller has it already; ``only``: compute just these signals (a baseline's
    inputs, on the request path), besides ``n_scored`` and ``entropy_k`` -- each value is the one the full dict
    has."""
    a = TokenArrays.of(seg) if arrays is None else arrays
    ok = ~np.isnan(a.nll)
    v = a.nll[ok]
    n = int(v.shape[0])
    if n == 0:
        return None

    want = _wanted(only)
    windows = [w for w in widths if want(f"max_w{w}", f"min_w{w}")]
    # one cumulative sum serves every width (none when no window is asked for)
    c = _cumsum(v) if windows or want("spike_frac") else v[:0]
    out: dict[str, float] = {}
    for w in windows:
        e = min(w, n)
        sums = c[e:] - c[:-e]  # the extremes of the sums are the extremes of the means (e > 0: monotone)
        out[f"max_w{w}"] = float(_MAX(sums)) / e
        out[f"min_w{w}"] = float(_MIN(sums)) / e
    total = float(_SUM(v)) if want("whole_nll", "bits_per_byte", "spike_frac") else math.nan
    mean = total / n
    n_tok = int(a.nll.shape[0])
    if want("whole_nll"):
        out["whole_nll"] = mean
    if want("bits_per_byte"):
        out["bits_per_byte"] = total / np.log(2.0) / (int(a.nbytes[ok].sum()) or 1)
    if want("mean_entropy"):
        ent = a.entropy[~np.isnan(a.entropy)]
        out["mean_entropy"] = float(_SUM(ent)) / ent.size if ent.size else float("nan")  # = ent.mean()
    if want("spike_frac"):
        hot = _means(c, min(8, n)) > mean + 2.0
        out["spike_frac"] = int(np.count_nonzero(hot)) / hot.size  # = hot.mean()
    if want("excluded_frac"):
        out["excluded_frac"] = (a.n_clamped + a.n_missing) / n_tok if n_tok else 0.0
    if want("surprise_cusum"):
        out["surprise_cusum"] = surprise_cusum(a.nll, a.entropy)
    if want("excess_cusum"):
        out["excess_cusum"] = surprise_cusum(a.nll, a.entropy, EXCESS_DRIFT)
    if want("distinct", "repeat_run", "same_run", "lag_repeat"):
        if a.keys is None:
            a.keys = token_keys(seg)
            a.n_distinct = int(a.keys.max()) + 1 if a.keys.size else 0  # token_keys numbers the distinct from 0
        keys = a.keys
        if want("distinct"):
            out["distinct"] = a.n_distinct / keys.size if keys.size else 1.0
        out.update(_repetition(keys, want))
    out["n_scored"] = float(n)  # metadata, not signals: the length bucket, and the kind of entropy behind them
    if seg.entropy_k is not None:
        out["entropy_k"] = float(seg.entropy_k)
    return out
