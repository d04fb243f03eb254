"""OpenAI-shaped bodies the Guard returns: a chat completion, a held/refusal completion, an error."""

from __future__ import annotations

import time
from typing import Any

from .report import Usage

__all__ = ["chat_completion", "error_body"]


def chat_completion(request_id: str, model: str, content: str | None, finish_reason: str, usage: Usage,
                    message_extra: dict[str, Any] | None = None,
                    response_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``message_extra`` / ``response_extra``: what a pass-through backend answered besides the text (tool calls,
    refusal, system_fingerprint ...), returned as it came."""
    message: dict[str, Any] = {"role": "assistant", "content": content, **(message_extra or {})}
    return {
        "id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage.model_dump(), **(response_extra or {}),
    }


def error_body(message: str, code: str = "guardrail_rejected", type_: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
