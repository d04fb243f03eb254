"""What a guarded call returns: the completion (or None), the OpenAI-style error when rejected as one, the
report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import GuardrailError
from ..types import Generation
from .report import GuardReport

__all__ = ["GuardRejectedError", "GuardResult"]


class GuardRejectedError(GuardrailError):
    """Raised by :meth:`GuardResult.raise_for_error`: the policy rejected the request as an error (HTTP 400,
    code ``guardrail_rejected``); the report is attached."""

    def __init__(self, message: str, report: GuardReport, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.report, self.body, self.status = report, body, 400


@dataclass
class GuardResult:
    completion: dict[str, Any] | None
    report: GuardReport
    error: dict[str, Any] | None = None  # {"error": {...}} when rejected as an error
    status: int = 200
    generation: Generation | None = None  # the delivered attempt (tokens, logprobs); None for a refusal or hold

    @property
    def content(self) -> str | None:
        return None if self.completion is None else self.completion["choices"][0]["message"]["content"]

    def raise_for_error(self) -> GuardResult:
        if self.error is not None:
            raise GuardRejectedError(self.error["error"]["message"], self.report, self.error)
        return self

    def to_json(self) -> dict[str, Any]:
        """``{"completion": <chat completion or null>, "guardrail": <report>}`` (plus ``error`` when rejected)."""
        out: dict[str, Any] = {"completion": self.completion, "guardrail": self.report.model_dump(mode="json")}
        if self.error is not None:
            out["error"] = self.error["error"]
        return out
