"""Synthetic segments scored as if by the embedded scorer, for Guard unit tests against the shipped baselines
(the scripted backend claims the embedded scorer's identity; the numbers are chosen, not computed)."""

from __future__ import annotations

import numpy as np

from guardrail.backends.base import ScorerInfo
from guardrail.baselines.registry import resolve
from guardrail.types import Generation, Segment, Side, Token

WORDS = ("the river runs past old mills and quiet farms where people grow apples pears plums beans corn wheat "
         "barley oats and keep bees goats sheep horses in fields near small towns with markets schools churches "
         "bridges roads trains buses bikes boats").split()


def embedded_scorer() -> ScorerInfo:
    """A ScorerInfo whose id is the shipped baselines' scorer id."""
    return ScorerInfo.from_id(resolve("general", "prompt").scorer_id)


def segment(nll: list[float], ent: list[float], side: Side = Side.PROMPT, words: list[str] | None = None,
            scorer: ScorerInfo | None = None) -> Segment:
    sc = scorer or embedded_scorer()
    words = words or [WORDS[i % len(WORDS)] for i in range(len(nll))]
    text, tokens = "", []
    for w, x, e in zip(words, nll, ent, strict=True):
        piece = (" " if text else "") + w
        tokens.append(Token(piece, piece.encode(), -x, None, len(text), len(text) + len(piece), entropy=e))
        text += piece
    return Segment(text=text, side=side, tokens=tokens, backend=sc.backend, model=sc.model, tokenizer=sc.tokenizer,
                   logprob_mode=sc.logprob_mode, scorer_id=sc.id, entropy_k=49152)


def benign(n: int = 40, seed: int = 0, side: Side = Side.PROMPT) -> Segment:
    rng = np.random.default_rng(seed)
    return segment(list(rng.gamma(2.0, 1.3, n)), list(rng.uniform(2.0, 3.5, n)), side)


def gibberish_suffix(n_plain: int = 20, n_suffix: int = 24, seed: int = 1) -> Segment:
    """Plain text followed by a stretch of tokens each far beyond what the model expected (a GCG suffix)."""
    rng = np.random.default_rng(seed)
    nll = list(rng.gamma(2.0, 1.3, n_plain)) + list(rng.uniform(10, 14, n_suffix))
    ent = list(rng.uniform(2.0, 3.5, n_plain + n_suffix))
    words = [WORDS[i % len(WORDS)] for i in range(n_plain)] + [f"x{i}q" for i in range(n_suffix)]
    return segment(nll, ent, Side.PROMPT, words)


def generation(seg: Segment, finish: str = "stop") -> Generation:
    seg.side = Side.OUTPUT
    return Generation(output=seg, finish_reason=finish, prompt_tokens=12)


def word_salad(n: int = 60, seed: int = 2) -> Segment:
    rng = np.random.default_rng(seed)
    return segment(list(rng.uniform(9, 12, n)), list(rng.uniform(6, 8, n)), Side.OUTPUT,
                   [f"z{i}k" for i in range(n)])
