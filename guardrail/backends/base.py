"""The backend protocol: the one small async surface every generation/scoring backend implements.

A backend turns requests into normalized :class:`~guardrail.types.Segment` objects.  It says what it can do
through :class:`Capabilities`; it never invents numbers it did not get (no logprobs -> ``UnscorableError``).
Blocking work (a local model, a sync client) runs off the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ..types import Generation, LogprobMode, Segment, Side, Token

__all__ = [
    "Backend",
    "BackendBase",
    "Capabilities",
    "GenerationRequest",
    "Message",
    "ScorerInfo",
    "TokenEvent",
]


class ScorerInfo(BaseModel):
    """Everything that changes the numbers.  ``id`` is the one string used by caches, baselines, reports."""

    model_config = ConfigDict(frozen=True)

    backend: str
    model: str
    weights: str  # content hash of the weights where readable, else the backend's model revision
    tokenizer: str
    logprob_mode: LogprobMode
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.settings.items()))
        return (
            f"{self.backend}:{self.model}@{self.weights}"
            f"|tok={self.tokenizer}|mode={self.logprob_mode.value}|{opts}"
        )

    @classmethod
    def from_id(cls, sid: str) -> ScorerInfo:
        """Parse an :attr:`id` back (settings as int where they are digits); ``from_id(x.id).id == x.id``."""
        try:
            head, rest = sid.split("|tok=", 1)
            backend, mw = head.split(":", 1)
            model, weights = mw.rsplit("@", 1)
            tok, mode, opts = rest.split("|", 2)
            settings: dict[str, str | int | float | bool] = {}
            for kv in filter(None, opts.split(",")):
                k, v = kv.split("=", 1)
                settings[k] = int(v) if v.isdigit() else v
            info = cls(backend=backend, model=model, weights=weights, tokenizer=tok,
                       logprob_mode=LogprobMode(mode.removeprefix("mode=")), settings=settings)
        except ValueError:
            raise ValueError(f"not a scorer id: {sid!r}") from None
        if info.id != sid:
            raise ValueError(f"scorer id does not round-trip: {sid!r}")
        return info

    def report(self) -> dict[str, object]:
        return {
            "id": self.id, "backend": self.backend, "model": self.model, "weights": self.weights,
            "tokenizer": self.tokenizer, "logprob_mode": self.logprob_mode.value,
            "settings": dict(self.settings),
        }


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_logprobs: bool  # can score a prompt / raw text (teacher forcing, prompt_logprobs, echo)
    output_logprobs: bool  # generation returns per-token logprobs
    max_top_k: int | None  # most alternatives per token it will return (None: no limit)
    logprob_mode: LogprobMode
    tokenizer: str
    exact_entropy: bool = False  # entropy from the full distribution, not a top-k lower bound
    streaming: bool = True
    passthrough: bool = False  # forwards GenerationRequest.extra / raw_messages as they came


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_logprobs: int = Field(default=5, ge=0, le=20)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    score_prompt: bool = False  # also return the prompt segment (template tokens flagged special)
    logprobs: bool = True  # ask for output logprobs (off when nothing needs the serving model's own)
    # keep each output token's alternatives (Token.top); False: only their entropy and count are read (the Guard,
    # when its caller did not ask for them: they are judged by their entropy, and building them is the larger
    # part of reading a response's logprobs)
    alternatives: bool = True
    # pass-through (backends with Capabilities.passthrough): fields forwarded as they came (tools,
    # response_format, vendor fields ...) and the messages as the client sent them (content parts, tool calls)
    extra: dict[str, Any] = Field(default_factory=dict)
    raw_messages: list[dict[str, Any]] | None = None
    # a text completion: the model continues this text as it is (no chat template); ``messages`` then holds it
    # as one user message, for screening
    raw_prompt: str | None = None


@dataclass(slots=True)
class TokenEvent:
    """One streamed output token; the last event carries ``finish_reason``.

    A plain slotted dataclass, not a pydantic model: one is built per streamed token, on the hot path.
    """

    index: int
    token: Token | None  # None only on a final event that adds no token
    text: str  # decoded text this event adds (complete characters only)
    finish_reason: str | None = None
    prompt_tokens: int | None = None  # on the last event, where the backend knows it
    # not None: this event is part of a tool call, its text is not message content; the list holds the chunk's
    # OpenAI ``delta.tool_calls`` entries as they came (on one event of the chunk, ``[]`` on its others)
    tool_calls: list[dict[str, Any]] | None = None


class BackendBase:
    """Plumbing shared by the implementations: the protocol's two properties read ``_scorer`` and ``_caps``,
    which each backend sets in its constructor."""

    _scorer: ScorerInfo
    _caps: Capabilities

    @property
    def scorer(self) -> ScorerInfo:
        return self._scorer

    @property
    def text_scorer(self) -> ScorerInfo:
        """The scorer whose numbers ``score``/``score_many`` give: this backend's own unless it hands text
        scoring to a separate scorer.  Caches and baseline checks of scored text key by its id."""
        return self._scorer

    @property
    def text_cache_key(self) -> str:
        """The score cache's key for text this backend scores: the text scorer's id, plus whatever changes the
        segment without changing a number (the embedded scorer adds how many alternatives it reports)."""
        return self.text_scorer.id

    @property
    def capabilities(self) -> Capabilities:
        return self._caps


@runtime_checkable
class Backend(Protocol):
    @property
    def scorer(self) -> ScorerInfo: ...

    @property
    def text_scorer(self) -> ScorerInfo: ...

    @property
    def text_cache_key(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment: ...

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]: ...

    async def generate(self, request: GenerationRequest) -> Generation: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]: ...

    async def aclose(self) -> None: ...
