"""Every error the proxy answers, in OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with
the right status: what a client library already knows how to raise.  Never a traceback, never a 500 for
something a request or a backend did."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ..errors import (
    BackendBusyError,
    BackendError,
    BackendHTTPError,
    BackendTimeoutError,
    ConfigError,
    GuardrailError,
    InputError,
)
from ..jsonio import dumps

__all__ = ["ProxyError", "error_response", "from_exception"]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 502: "backend_error", 503: "service_unavailable",
          504: "timeout_error"}


class ProxyError(Exception):
    """An error the proxy answers as it is: status, message, param, code, extra headers."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


class JSONBody(JSONResponse):
    """A JSON response written by jsonio.dumps (orjson: ~10x faster than the standard library on a completion
    with logprobs; NaN is written as null instead of failing the response)."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> JSONBody:
    body: dict[str, Any] = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                                      "param": param, "code": code}}
    if extra:
        body.update(extra)
    return JSONBody(body, status_code=status, headers=headers)


def from_exception(exc: BaseException) -> ProxyError:
    """Map guardrail's exception tree to a status: a backend fault is the backend's (502/504/429), never the
    policy's fail mode (that one is for answers without usable logprobs, handled inside the Guard)."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, InputError):
        return ProxyError(400, str(exc), code="invalid_request")
    if isinstance(exc, BackendBusyError):
        retry = max(1, round(exc.retry_after))
        return ProxyError(429, f"{exc} (retry after {retry} s)", code="backend_busy",
                          headers={"retry-after": str(retry)})
    if isinstance(exc, BackendTimeoutError):
        return ProxyError(504, str(exc), code="backend_timeout")
    if isinstance(exc, BackendHTTPError) and exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
        return ProxyError(400, f"the backend refused the request: {exc}", code="backend_rejected")
    if isinstance(exc, BackendError):
        return ProxyError(502, str(exc), code="backend_error")
    if isinstance(exc, ConfigError):
        return ProxyError(400, str(exc), code="invalid_configuration")
    if isinstance(exc, GuardrailError):
        return ProxyError(400, str(exc), code="guardrail_error")
    return ProxyError(500, "internal error (logged with the request id)", code="internal_error")
