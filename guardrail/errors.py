"""The exception tree.  Backends map foreign errors into it at the edge, most specific first.

    GuardrailError
    ├── ConfigError          a setting or argument is invalid (window width < 1, unknown option …)
    ├── InputError           the text to score is unusable (empty, undecodable bytes, not UTF-8 …)
    ├── ModelError           a model file is missing, unreadable or not a valid GGUF
    └── BackendError         the backend failed while doing its work
        └── UnscorableError  the backend answered but gave no usable logprobs

Every error carries a one-line, user-facing message; the CLI prints ``error: <message>`` and exits
non-zero, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConfigError",
    "GuardrailError",
    "InputError",
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
