"""The OpenAI-compatible guardrail proxy (``guardrail serve``): a thin FastAPI adapter around the Guard."""

from .app import create_app
from .config import ProxyConfig, load_config

__all__ = ["ProxyConfig", "create_app", "load_config"]
