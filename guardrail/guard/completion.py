"""OpenAI-shaped bodies the Guard returns: a chat completion, a held/refusal completion, an error."""

from __future__ import annotations

import time
from typing import Any

from .report import Usage

__all__ = ["chat_completion", "error_body"]


def chat_completion(request_id: str, model: str, content: str, finish_reason: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                     "finish_reason": finish_reason}],
        "usage": usage.model_dump(),
    }


def error_body(message: str, code: str = "guardrail_rejected", type_: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
