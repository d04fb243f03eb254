"""The exception tree.  Backends map foreign errors into it at the edge, most specific first.

    GuardrailError
    ├── ConfigError          a setting or argument is invalid (window width < 1, unknown option …)
    ├── InputError           the text to score is unusable (empty, undecodable bytes, not UTF-8 …)
    ├── ModelError           a model file is missing, unreadable or not a valid GGUF
    └── BackendError         the backend failed while doing its work
        ├── UnscorableError          the backend answered but gave no usable logprobs
        ├── BackendTimeoutError      no answer (or no next stream chunk) within the deadline
        ├── BackendUnavailableError  cannot connect; connection refused or reset (mid-stream too)
        ├── BackendBusyError         the backend's bounded queue is full (``.retry_after`` seconds)
        └── BackendHTTPError         the server answered with an error status (``.status``)
            └── LogprobLimitError    top_logprobs / prompt_logprobs above the server's limit (vLLM: 400)

Backends map foreign errors (litellm, openai, httpx) into the BackendError subtree with
:func:`guardrail.backends.litellm.map_backend_errors`, most specific first.

Every error carries a one-line, user-facing message; the CLI prints ``error: <message>`` and exits
non-zero, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendBusyError",
    "BackendError",
    "BackendHTTPError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "ConfigError",
    "GuardrailError",
    "InputError",
    "LogprobLimitError",
    "ModelError",
    "UnscorableError",
]


class GuardrailError(Exception):
    """Base of every error guardrail raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:  # always one line
        return " ".join(str(self.args[0] if self.args else self.__class__.__name__).split())


class ConfigError(GuardrailError):
    exit_code = 2


class InputError(GuardrailError):
    exit_code = 2


class ModelError(GuardrailError):
    exit_code = 3


class BackendError(GuardrailError):
    exit_code = 4


class UnscorableError(BackendError):
    """No logprobs: the policy decides (fail open or closed); never a score of 0."""


class BackendTimeoutError(BackendError):
    """The backend did not answer (or send the next stream chunk) in time."""


class BackendUnavailableError(BackendError):
    """The backend cannot be reached, refused the connection or dropped it (also mid-stream)."""


class BackendBusyError(BackendError):
    """Too many requests already wait for the backend: retry after ``retry_after`` seconds (HTTP 429)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendHTTPError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LogprobLimitError(BackendHTTPError):
    """More top logprobs were asked for than the server allows (vLLM ``--max-logprobs``: HTTP 400)."""
