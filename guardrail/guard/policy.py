"""Declarative policies: what is screened, which baseline judges each side, which action each severity tier
takes, the regenerate ladder, budgets, rejection style, human review, fail modes, shadow mode.

Policies are YAML files (``policies/*.yaml``; the shipped ones are commented so that a reader learns the
schema from them), read with ``yaml.SafeLoader`` and validated by pydantic with ``extra="forbid"``.  Every
error names the file, the line and the field, in one line.

A tier ``{p: 0.01, action: reject}`` fires when the side's conformal p-value is <= 0.01; when several fire,
the most severe action wins (allow < annotate < regenerate < review < reject).  ``tail: true`` compares the
continuous tail statistic instead, which is what a tier below the baseline's resolution needs (see
:meth:`~guardrail.baselines.model.Baseline.check_tier`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..errors import ConfigError
from ..yamlconf import parse_yaml_model

__all__ = [
    "ACTIONS", "SEVERITY", "Action", "Budget", "Policy", "PolicyError", "RegenerateRules", "RejectRules",
    "ReviewRules", "Rung", "SideRules", "StreamRules", "Tier", "load_policy", "policies_dir", "shipped_policies",
]

Action = Literal["allow", "annotate", "regenerate", "review", "reject"]
ACTIONS: tuple[str, ...] = ("allow", "annotate", "regenerate", "review", "reject")
SEVERITY = {a: i for i, a in enumerate(ACTIONS)}  # most severe last
FailMode = Literal["open", "closed"]
Role = Literal["system", "user", "assistant", "tool", "developer"]


class PolicyError(ConfigError):
    """A policy file is unreadable or invalid: the message names file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    p: float = Field(gt=0.0, lt=1.0, description="fires when the side's p-value is <= p")
    action: Action
    tail: bool = Field(False, description="compare the continuous tail statistic (allowed below the resolution)")


class SideRules(_Strict):
    enabled: bool = True
    baseline: str = Field("general", description="a registered baseline name (guardrail baseline list) or 'route'")
    roles: list[Role] = Field(default_factory=lambda: ["user"], description="prompt side: message roles screened")
    tiers: list[Tier] = Field(min_length=1)
    unscorable: FailMode = "open"  # no logprobs for this side: open = allow it, closed = its most severe tier
    missing_signal: FailMode = "open"  # a signal without a value: open = decide on the others, closed = most severe
    invalid_tool_call: Action | None = Field(None, description="output side: what a tool call that names a tool "
                                             "not offered, or whose arguments are not a JSON object satisfying the "
                                             "tool's parameters schema, leads to (None: not checked)")
    concurrent: bool = Field(True, description="prompt side, a backend other than the scorer: generate while the "
                             "prompt is screened (nothing is released before it passes; a rejection cancels it)")

    @field_validator("tiers")
    @classmethod
    def _distinct(cls, tiers: list[Tier]) -> list[Tier]:
        ps = [t.p for t in tiers]
        if len(set(ps)) != len(ps):
            raise ValueError(f"two tiers have the same p ({', '.join(f'{p:g}' for p in ps)})")
        return sorted(tiers, key=lambda t: t.p)

    @field_validator("baseline")
    @classmethod
    def _name(cls, v: str) -> str:
        if "/" in v or "\\" in v or v.endswith(".json"):
            raise ValueError("a baseline is named, never a path: register it (guardrail baseline list)")
        return v

    @property
    def most_severe(self) -> str:
        return max((t.action for t in self.tiers), key=SEVERITY.__getitem__)


class Rung(_Strict):
    """One retry's sampling change.  Unset fields keep the request's value; the seed is derived from the request
    id and the attempt number (recorded in the report), so a ladder is reproducible."""

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    system_note: str | None = Field(None, min_length=1, description="a corrective system message added")


class RegenerateRules(_Strict):
    max_attempts: int = Field(2, ge=0, le=5, description="retries after the first generation")
    ladder: list[Rung] = Field(default_factory=lambda: [Rung(temperature=0.7, top_p=0.95)])
    on_exhausted: Literal["annotate", "review", "reject"] = "reject"

    @model_validator(mode="after")
    def _first_rung_changes(self) -> RegenerateRules:
        if self.max_attempts and not self.ladder:
            raise ValueError("max_attempts > 0 needs a ladder of at least one rung")
        if self.ladder and not ((self.ladder[0].temperature or 0) > 0 or self.ladder[0].system_note):
            raise ValueError("the first rung must set a temperature > 0 or a system_note: a greedy request's "
                             "first retry must change something besides the seed")
        return self


class Budget(_Strict):
    tokens: int | None = Field(8192, ge=1, description="prompt + output tokens over all attempts")
    seconds: float | None = Field(120.0, gt=0.0, description="wall time over all attempts")


class RejectRules(_Strict):
    style: Literal["error", "refusal"] = "error"  # an OpenAI-style 400, or an assistant refusal (content_filter)
    message: str = "The request was blocked by the guardrail policy."


class ReviewRules(_Strict):
    mode: Literal["wait", "defer", "audit"] = "defer"
    timeout_s: float = Field(30.0, gt=0.0, description="wait mode: how long the caller waits for a decision")
    on_timeout: Literal["allow", "annotate", "reject"] = "reject"
    message: str = "The answer is held for review."


class StreamRules(_Strict):
    """Streaming responses: the growing output is assessed at checkpoints and nothing is released before it
    passed; a checkpoint past the whole-stream threshold ends the stream (``finish_reason: content_filter``) and
    cancels the backend request.  With an output baseline that carries a whole-stream calibration (the shipped
    own-generation ones do) the threshold is its cut-off for ``abort_p`` and its check interval is used: the
    chance that a normal generation is cut anywhere in its stream is at most ``abort_p`` within the calibrated
    length.  Otherwise every ``check_every`` tokens against ``abort_p`` / (checkpoints the request can have),
    Bonferroni (measured: docs/proxy.md)."""

    enabled: bool = True
    check_every: int = Field(16, ge=1, le=512, description="tokens between checkpoints (and the most held back) "
                             "when the baseline has no stream calibration (one at a fixed interval brings its "
                             "own; one over every prefix uses this)")
    abort_p: float = Field(0.01, gt=0.0, lt=1.0, description="false-abort budget of a whole stream")
    embedded_every: int = Field(0, ge=0, le=4096, description="with the embedded scorer judging another backend's "
                                "stream (no own-logprob baseline): tokens between checkpoints, each teacher-forcing "
                                "the answer so far on the embedded model (cut by the output baseline's calibration "
                                "over every prefix when it has one, else Bonferroni over them; a reply session "
                                "decodes only what is new since the last checkpoint); 0: such a stream is judged at "
                                "its end only")


class Policy(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    prompt: SideRules | None = None
    output: SideRules | None = None
    regenerate: RegenerateRules = Field(default_factory=RegenerateRules)
    budget: Budget = Field(default_factory=Budget)
    reject: RejectRules = Field(default_factory=RejectRules)
    review: ReviewRules = Field(default_factory=ReviewRules)
    stream: StreamRules = Field(default_factory=StreamRules)
    shadow: bool = Field(False, description="report what would have happened, act as allow")

    _source: str = PrivateAttr("<memory>")
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _sides(self) -> Policy:
        if self.prompt is not None and any(t.action == "regenerate" for t in self.prompt.tiers):
            raise ValueError("prompt.tiers: 'regenerate' acts on outputs only (a prompt cannot be regenerated)")
        if self.prompt is not None and self.prompt.invalid_tool_call is not None:
            raise ValueError("prompt.invalid_tool_call: tool calls are checked on the output side only")
        if not any(s is not None and s.enabled for s in (self.prompt, self.output)):
            raise ValueError("the policy checks no side: enable prompt or output")
        return self

    @property
    def hash(self) -> str:
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def source(self) -> str:
        return self._source

    def where(self, *path: Any) -> str:
        """``file:line`` of the deepest known key on ``path`` (for errors raised after loading)."""
        for k in range(len(path), -1, -1):
            if path[:k] in self._lines:
                return f"{self._source}:{self._lines[path[:k]]}"
        return self._source

    def sides(self) -> dict[str, SideRules]:
        return {name: s for name, s in (("prompt", self.prompt), ("output", self.output)) if s is not None and s.enabled}

    def with_baseline(self, name: str | None) -> Policy:
        """The same policy judging every side by the baseline ``name`` (a domain); ``None``: unchanged."""
        if name is None:
            return self
        out = self.model_copy(update={s: r.model_copy(update={"baseline": name}) for s, r in self.sides().items()})
        out._source, out._lines = self._source, self._lines
        return out


def parse_policy(text: str, source: str = "<memory>") -> Policy:
    """Validate a policy document; errors name ``source``, the line and the field."""
    pol, lines = parse_yaml_model(text, source, Policy, what="a policy", error=PolicyError)
    pol._source, pol._lines = source, lines
    return pol


def policies_dir() -> Path:
    """The shipped policies (the repository's ``policies/``, packaged as guardrail/data/policies)."""
    return Path(__file__).resolve().parents[1] / "data" / "policies"


def shipped_policies() -> dict[str, Path]:
    return {p.stem: p for p in sorted(policies_dir().glob("*.yaml"))}


def load_policy(name_or_path: str | Path) -> Policy:
    """A shipped policy by name, or a YAML file."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml") and not p.exists():
        table = shipped_policies()
        if str(name_or_path) not in table:
            raise PolicyError(f"no policy {str(name_or_path)!r}; shipped: {', '.join(table) or '(none)'}; or give "
                              f"a YAML file")
        p = table[str(name_or_path)]
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"{p}: cannot read policy ({getattr(e, 'strerror', None) or e})") from None
    return parse_policy(text, str(p))
