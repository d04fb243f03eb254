"""Normalized token logprobs: the one internal shape every backend produces.

Rules (see docs in README, "Normalised logprobs"):

* a missing, null or NaN logprob is ``None`` -- never 0;
* a value at or below the vLLM clamp (-9999.0) or ``-inf`` is kept as ``None`` with the ``clamped`` flag:
  the true value is -inf and it must not be averaged as a number;
* a :class:`Segment` holds tokens of ONE side (prompt / output / text) from ONE backend, model, tokenizer
  and logprob mode; the scoring core never mixes segments.

Offsets (``start``/``end``) are Python string indices into ``Segment.text`` (``end`` exclusive).  A token
that is only part of a UTF-8 character (``partial_utf8``) spans the whole character it belongs to.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

__all__ = [
    "CLAMP_LOGPROB",
    "Flag",
    "Generation",
    "LogprobMode",
    "Segment",
    "Side",
    "Token",
    "TopLogprob",
    "normalize_logprob",
]

#: vLLM (and others) replace -inf with this value in JSON bodies.
CLAMP_LOGPROB = -9999.0


class Side(StrEnum):
    PROMPT = "prompt"
    OUTPUT = "output"
    TEXT = "text"


class LogprobMode(StrEnum):
    RAW = "raw_logprobs"  # log-softmax of the raw logits (before temperature, penalties, top-p)
    PROCESSED = "processed_logprobs"  # after the sampler's processing


class Flag(StrEnum):
    CLAMPED = "clamped"  # backend reported -inf / <= -9999: excluded, counted
    MISSING = "missing"  # backend reported no value (null / NaN / absent)
    NO_CONTEXT = "no_context"  # first token of a text: nothing predicts it
    SPECIAL = "special"  # special or chat-template token, not user text
    PARTIAL_UTF8 = "partial_utf8"  # bytes are not a whole UTF-8 character sequence


def normalize_logprob(value: Any) -> tuple[float | None, Flag | None]:
    """Map a backend's raw logprob value to ``(logprob or None, flag or None)``.

    Missing/NaN/+inf/positive-nonsense → missing; ``-inf`` or ``<= -9999`` → clamped.
    Values in (0, 1e-6] above zero are rounding noise and are read as 0.0.
    """
    if value is None or isinstance(value, bool):
        return None, Flag.MISSING
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None, Flag.MISSING
    if math.isnan(x) or x == math.inf:
        return None, Flag.MISSING
    if x <= CLAMP_LOGPROB:  # also catches -inf
        return None, Flag.CLAMPED
    if x > 0.0:
        if x > 1e-6:
            return None, Flag.MISSING
        x = 0.0
    return x, None


class TopLogprob(NamedTuple):
    """One alternative at a position (a named tuple: cheap to build, several per streamed token)."""

    token: str
    logprob: float
    token_id: int | None = None


@dataclass(slots=True)
class Token:
    text: str
    bytes: builtins.bytes
    logprob: float | None
    token_id: int | None = None
    start: int = 0
    end: int = 0
    top: tuple[TopLogprob, ...] = ()
    flags: frozenset[Flag] = frozenset()
    entropy: float | None = None  # nats; exact or a top-k lower bound (see Segment.entropy_k)

    @property
    def scored(self) -> bool:
        """Counts towards NLL statistics: has a value and is user text."""
        return self.logprob is not None and Flag.SPECIAL not in self.flags


@dataclass(slots=True)
class Segment:
    """Tokens of one side of one exchange, from one scorer."""

    text: str
    side: Side
    tokens: list[Token]
    backend: str
    model: str
    tokenizer: str
    logprob_mode: LogprobMode
    scorer_id: str
    entropy_k: int | None = None  # k behind Token.entropy; == vocabulary size when exact
    n_chunks: int = 1  # > 1 when the text was longer than the context and scored in overlapping chunks
    notes: list[str] = field(default_factory=list)
    # (tokens list, its length, scoring.TokenArrays): the tokens as columns, made once per token list (a backend
    # that has them as arrays attaches them); stale as soon as ``tokens`` is replaced or grows -- see
    # TokenArrays.of
    columns: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def has_logprobs(self) -> bool:
        return any(t.logprob is not None for t in self.tokens)


@dataclass(slots=True)
class Generation:
    """A completed generation: the prompt as the model saw it and the output segment."""

    output: Segment
    finish_reason: str
    prompt_tokens: int
    prompt: Segment | None = None  # present when the backend also scored the prompt
    # pass-through backends: the answer's message fields besides role and content (tool_calls, refusal ...) and
    # its top-level fields worth returning (system_fingerprint ...), as the backend sent them
    message_extra: dict[str, Any] = field(default_factory=dict)
    response_extra: dict[str, Any] = field(default_factory=dict)
    completion_tokens: int | None = None  # the backend's count where it differs from len(output.tokens)
