"""The OpenAI chat request as the proxy reads it: known fields validated, the guardrail's own choices (policy,
domain) taken out, and every field this backend path cannot honour refused with a 400 that names it (never
silently dropped)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..backends.base import Message
from .errors import ProxyError

__all__ = ["ChatRequest", "GuardChoice", "StreamOptions", "guard_messages"]

# fields a request may carry that change nothing the embedded/Guard path generates (bookkeeping only)
_HARMLESS = {"user", "metadata", "store", "service_tier", "stream_options"}
# fields accepted with their neutral value only
_NEUTRAL: dict[str, Any] = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0, "parallel_tool_calls": None,
                            "tool_choice": "none", "logit_bias": None, "response_format": None}


class GuardChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = None
    domain: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``.  Unknown fields are kept (and refused by :meth:`check_supported` unless
    the backend path forwards them)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n: int | None = Field(None, ge=1)
    guardrail: GuardChoice | None = None

    def max_new_tokens(self, default: int, limit: int) -> int:
        n = self.max_completion_tokens or self.max_tokens or default
        if n > limit:
            field = "max_completion_tokens" if self.max_completion_tokens else "max_tokens"
            raise ProxyError(400, f"{field} = {n} is over this server's limit of {limit}", param=field,
                             code="max_tokens_over_limit")
        return n

    def guard_call(self, *, max_tokens: int, temperature: float, passthrough: bool,
                   raw_prompt: str | None = None) -> dict[str, Any]:
        """The keyword arguments of ``Guard.chat`` / ``Guard.stream`` for this request (``temperature``: the
        request's, else this default)."""
        kw: dict[str, Any] = dict(
            model=self.model, max_tokens=max_tokens,
            temperature=self.temperature if self.temperature is not None else temperature, top_p=self.top_p,
            seed=self.seed, stop=self.stop_list(), logprobs=self.logprobs,
            top_logprobs=(self.top_logprobs or 0) if self.logprobs else 0)
        if passthrough:
            kw.update(extra=self.passthrough(), raw_messages=None if raw_prompt is not None else self.messages)
        if raw_prompt is not None:
            kw["raw_prompt"] = raw_prompt
        return kw

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > 4:
            raise ProxyError(400, "stop: at most 4 sequences", param="stop")
        return [s for s in stops if s]

    def passthrough(self) -> dict[str, Any]:
        """The fields the guard does not read, to forward as they came (a pass-through backend)."""
        return {k: v for k, v in (self.model_extra or {}).items() if k != "stream_options"}

    def check_supported(self, backend: str, passthrough: bool = False) -> None:
        """A field this path cannot honour is a 400 naming it (tools, response_format, n > 1, ...).  A
        pass-through backend takes them all, except what the guard itself cannot follow (n > 1; the legacy
        ``functions``' function_call deltas in a stream: ``tools`` stream fine)."""
        if self.top_logprobs and not self.logprobs:
            raise ProxyError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.n not in (None, 1):
            raise ProxyError(400, f"n = {self.n}: one choice per request through the guard", param="n",
                             code="unsupported_parameter")
        extra = self.model_extra or {}
        if passthrough:
            if self.stream and extra.get("functions"):
                raise ProxyError(400, "functions (deprecated) with stream: true is not supported through the "
                                      "guard; use tools", param="functions", code="unsupported_parameter")
            return
        for name, value in extra.items():
            if name in _HARMLESS:
                continue
            if name in _NEUTRAL and (value == _NEUTRAL[name] or value is None or value == {"type": "text"}):
                continue
            raise ProxyError(400, f"{name}: not supported by model {self.model!r} (backend {backend}) through the "
                                  f"guard; remove it", param=name, code="unsupported_parameter")


def _content(m: dict[str, Any], i: int, passthrough: bool) -> str:
    c = m.get("content")
    if c is None:
        if (m.get("tool_calls") or m.get("function_call")) and not passthrough:
            raise ProxyError(400, f"messages[{i}]: tool calls are not supported by this backend path",
                             param=f"messages[{i}].tool_calls", code="unsupported_parameter")
        return ""
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for j, part in enumerate(c):
            if passthrough and isinstance(part, dict) and part.get("type") not in ("text", None):
                continue  # forwarded as it came; the guard screens the text parts
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ProxyError(400, f"messages[{i}].content[{j}]: only text parts are supported here (got "
                                      f"{kind!r})", param=f"messages[{i}].content[{j}]", code="unsupported_content")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ProxyError(400, f"messages[{i}].content: a string or a list of text parts", param=f"messages[{i}].content")


_ROLES: tuple[Literal["system", "user", "assistant", "tool", "developer"], ...] = (
    "system", "user", "assistant", "tool", "developer")


def guard_messages(req: ChatRequest, max_chars: int, passthrough: bool = False) -> list[Message]:
    """The request's messages as the Guard screens them (text parts joined; with a pass-through backend other
    parts and tool calls are forwarded, not screened), with the size limit applied."""
    out, total = [], 0
    for i, m in enumerate(req.messages):
        role = m.get("role")
        if role not in _ROLES:
            raise ProxyError(400, f"messages[{i}].role: one of {', '.join(_ROLES)} (got {role!r})",
                             param=f"messages[{i}].role")
        text = _content(m, i, passthrough)
        total += len(text)
        out.append(Message(role=role, content=text))
    if total > max_chars:
        raise ProxyError(400, f"messages: {total} characters, over this server's limit of {max_chars}",
                         param="messages", code="prompt_too_long")
    return out


class CompletionRequest(BaseModel):
    """``POST /v1/completions``, read as a chat request with one user message (what is screened) and the raw
    prompt the model continues (no chat template)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions

    def as_chat(self) -> tuple[ChatRequest, str]:
        """The equivalent chat request (its checks and sampling fields) and the raw prompt."""
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ProxyError(400, "prompt: one prompt per request through the guard", param="prompt",
                                 code="unsupported_parameter")
            prompt = prompt[0]
        if not prompt:
            raise ProxyError(400, "prompt: empty", param="prompt")
        extra = dict(self.model_extra or {})
        for name, neutral in (("echo", False), ("suffix", None), ("best_of", 1)):
            if name in extra and extra[name] not in (neutral, None):
                raise ProxyError(400, f"{name}: not supported by /v1/completions through the guard", param=name,
                                 code="unsupported_parameter")
            extra.pop(name, None)
        n_top = extra.pop("logprobs", None)  # the legacy form: the number of alternatives per token (0..20)
        if n_top is not None:
            if isinstance(n_top, bool) or not isinstance(n_top, int) or not 0 <= n_top <= 20:
                raise ProxyError(400, "logprobs: an integer from 0 to 20 (alternatives per token) or null",
                                 param="logprobs")
            extra.update(logprobs=True, top_logprobs=n_top)
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": self.max_tokens, **extra}
        try:
            return ChatRequest.model_validate(body), prompt
        except ValueError as e:
            raise ProxyError(400, f"invalid request: {e}") from None
