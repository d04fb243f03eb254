"""Backends: everything that turns requests into normalized token logprobs (see base.Backend)."""

from .base import Backend, Capabilities, GenerationRequest, Message, ScorerInfo, TokenEvent

__all__ = ["Backend", "Capabilities", "GenerationRequest", "Message", "ScorerInfo", "TokenEvent"]
