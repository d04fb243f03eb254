"""The methods compared by ``guardrail eval``, all on the same scorer's token logprobs (pure numpy).

Each method gives a score (higher = more suspicious), its flag at an operating threshold, and the characters
it would flag (for localisation).  Comparators, as published:

* ``whole_ppl`` -- whole-prompt perplexity (Alon & Kamfonas 2023); score = mean NLL (log perplexity).
* ``jain_window`` -- windowed perplexity (Jain et al. 2023): max mean NLL over windows of 10 tokens; flagged
  characters = every window above the threshold.
* ``nemo_length_ppl`` -- NeMo Guardrails' length-per-perplexity heuristic: ``len(text) / perplexity``,
  flagged at >= 89.79 (its default, set for GPT-2-large); whole text.
* ``nemo_prefix_suffix`` -- NeMo Guardrails' prefix/suffix heuristic: perplexity of the first 19 and of the
  19 words before the last one, each scored on its own, flagged when either is >= 1845.65; prompts under 20
  words are never flagged (score 0).
* ``cpd_online`` -- an online two-sided CUSUM change-point detector over standardized token surprise, z =
  (surprise - entropy - mu) / sigma with mu, sigma fitted on benign training tokens; k = 0.5, alarm at h = 5
  (the textbook design for a one-sigma shift); score = the largest CUSUM value; flagged characters = from
  the start of each alarmed excursion to its alarm.

Their ``published`` threshold is the tool's constant where it has one (NeMo) or the paper's rule applied to
training-split data (Jain, Alon: the largest value over plain harmful prompts, see ``reference.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..baselines.conformal import Assessment
from ..baselines.model import Baseline
from ..baselines.spans import Span, decision_spans
from ..baselines.spans import merge as _merge
from ..baselines.spans import scored_windows as _windows
from ..baselines.spans import window_span as _window_span
from ..scoring import TokenArrays

__all__ = [
    "CPD_H", "CPD_K", "JAIN_WIDTH", "NEMO_LP", "NEMO_PS", "Item", "Method", "cusum", "nemo_parts",
]

JAIN_WIDTH = 10
NEMO_LP = 89.79
NEMO_PS = 1845.65
NEMO_WORDS = 20
CPD_K = 0.5
CPD_H = 5.0



@dataclass
class Item:
    """One scored record, as every method reads it."""

    text: str
    arrays: TokenArrays
    feats: dict[str, float]
    parts: dict[str, tuple[Span, TokenArrays]] = field(default_factory=dict)  # nemo prefix / suffix


def nemo_parts(text: str) -> dict[str, tuple[Span, str]] | None:
    """NeMo's prefix (first 19 words) and suffix (words -20..-2), with their character spans in ``text``."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    if len(words) < NEMO_WORDS:
        return None
    pre, suf = words[0:19], words[-20:-1]
    return {
        "prefix": ((pre[0][0], pre[-1][1]), " ".join(text[a:b] for a, b in pre)),
        "suffix": ((suf[0][0], suf[-1][1]), " ".join(text[a:b] for a, b in suf)),
    }


def _mean_nll(a: TokenArrays) -> float:
    v = a.nll[~np.isnan(a.nll)]
    return float(v.mean()) if v.size else math.nan


class Method:
    name = ""
    published: float | None = None  # threshold in score units, None where the method has none
    strict = True  # flag = score > t (NeMo's rules use >=)

    def score(self, it: Item) -> float:
        raise NotImplementedError

    def flags(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        return scores > threshold if self.strict else scores >= threshold

    def spans(self, it: Item, threshold: float) -> list[Span]:
        """Characters flagged at ``threshold`` (the whole text by default)."""
        return [(0, len(it.text))]


class WholePPL(Method):
    name = "whole_ppl"

    def __init__(self, published: float | None = None) -> None:
        self.published = published

    def score(self, it: Item) -> float:
        return _mean_nll(it.arrays)


class JainWindow(Method):
    name = "jain_window"

    def __init__(self, published: float | None = None, width: int = JAIN_WIDTH) -> None:
        self.published, self.width = published, width

    def score(self, it: Item) -> float:
        m, idx, _ = _windows(it.arrays, self.width)
        return float(m.max()) if idx.size else math.nan

    def spans(self, it: Item, threshold: float) -> list[Span]:
        m, idx, w = _windows(it.arrays, self.width)
        return _merge([_window_span(it.arrays, idx, i, w) for i in np.flatnonzero(m > threshold)])


class NemoLengthPPL(Method):
    name = "nemo_length_ppl"
    published = NEMO_LP
    strict = False

    def score(self, it: Item) -> float:
        nll = _mean_nll(it.arrays)
        return len(it.text) * math.exp(-nll) if math.isfinite(nll) else math.nan


class NemoPrefixSuffix(Method):
    name = "nemo_prefix_suffix"
    published = math.log(NEMO_PS)  # scores are log perplexities
    strict = False

    def _parts(self, it: Item) -> dict[str, tuple[Span, float]]:
        return {k: (span, _mean_nll(a)) for k, (span, a) in it.parts.items()}

    def score(self, it: Item) -> float:
        vals = [v for _, v in self._parts(it).values() if math.isfinite(v)]
        return max(vals) if vals else 0.0  # under 20 words: never flagged

    def spans(self, it: Item, threshold: float) -> list[Span]:
        return _merge([span for span, v in self._parts(it).values() if v >= threshold])


def cusum(z: np.ndarray, k: float = CPD_K) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower CUSUM paths of standardized values ``z``: S+ = max(0, S+ + z - k), S- likewise on -z."""
    up, lo = np.empty(z.size), np.empty(z.size)
    su = sl = 0.0
    for i, x in enumerate(z.tolist()):
        su = max(0.0, su + x - k)
        sl = max(0.0, sl - x - k)
        up[i], lo[i] = su, sl
    return up, lo


class CPDOnline(Method):
    name = "cpd_online"

    def __init__(self, mu: float, sigma: float, k: float = CPD_K, h: float = CPD_H) -> None:
        self.mu, self.sigma, self.k, self.published = mu, sigma, k, h

    def _paths(self, a: TokenArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.flatnonzero(~np.isnan(a.nll) & ~np.isnan(a.entropy))
        z = (a.nll[idx] - a.entropy[idx] - self.mu) / self.sigma
        up, lo = cusum(z, self.k)
        return up, lo, idx

    def score(self, it: Item) -> float:
        up, lo, idx = self._paths(it.arrays)
        return float(max(up.max(), lo.max())) if idx.size else math.nan

    def spans(self, it: Item, threshold: float) -> list[Span]:
        up, lo, idx = self._paths(it.arrays)
        a, out = it.arrays, []
        for path in (up, lo):
            i = 0
            while i < path.size:
                if path[i] > threshold:  # alarm: back to where this excursion left zero
                    j = i
                    while j > 0 and path[j - 1] > 0:
                        j -= 1
                    out.append((int(a.start[idx[j]]), int(a.end[idx[i]])))
                    while i < path.size and path[i] > 0:  # skip the rest of this excursion
                        i += 1
                i += 1
        return _merge(out)


class Guardrail(Method):
    """Ours: the baseline's assessment at ``alpha``; the score is the continuous tail statistic ``-log tail_p``
    (the conformal p-value, continued below its resolution 1/(n+1) so that texts more extreme than every
    calibration unit still rank), the flag its decision (per length bucket).  Flagged characters: the top max-window of the
    narrowest width when a high-side signal decides, the lowest window of the widest width when a low-side
    one does."""

    name = "guardrail"

    def __init__(self, baseline: Baseline, alpha: float) -> None:
        self.baseline, self.alpha = baseline, alpha

    def assess(self, it: Item) -> Assessment:
        return self.baseline.assess(it.feats, self.alpha)

    def score(self, it: Item) -> float:
        return ranking(self.assess(it))

    def spans(self, it: Item, threshold: float) -> list[Span]:
        return decision_spans(self.baseline, it.arrays, it.feats, self.assess(it).top_signal)


def ranking(a: Assessment) -> float:
    """The ranking score of an assessment: ``-log tail_p`` (comparable across length buckets, continuous)."""
    return -math.log(a.tail_p)


