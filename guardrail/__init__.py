"""guardrail: keep LLM applications honest by reading the model's own token probabilities.

Core (this release): normalized token logprobs, a pure numpy perplexity scoring core, the embedded
llama.cpp scorer, batch scoring with a disk cache, and the ``guardrail`` CLI.
"""

from .errors import BackendError, ConfigError, GuardrailError, InputError, ModelError, UnscorableError
from .scoring import DEFAULT_WIDTHS, TextScore, WindowStat, score_segment
from .types import Flag, Generation, LogprobMode, Segment, Side, Token, TopLogprob


def wrap(client, policy="default", **kw):  # lazy import: importing guardrail stays light
    """An official openai client whose chat completions go through the Guard (see guardrail/wrapping.py)."""
    from .wrapping import wrap as _wrap

    return _wrap(client, policy, **kw)


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WIDTHS",
    "BackendError",
    "ConfigError",
    "Flag",
    "Generation",
    "GuardrailError",
    "InputError",
    "LogprobMode",
    "ModelError",
    "Segment",
    "Side",
    "TextScore",
    "Token",
    "TopLogprob",
    "UnscorableError",
    "WindowStat",
    "score_segment",
    "wrap",
]
