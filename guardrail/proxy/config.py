"""The proxy's configuration: served model names -> backend, policy and the choices a request may make; API
keys (SHA-256 hashes, never the keys); limits; bind address (127.0.0.1 unless told otherwise).

A YAML file validated by pydantic (``extra="forbid"``); every error names the file, the line and the field.
Without a file: the embedded model under the name ``smollm2-135m`` with the ``default`` policy (a request may
choose any shipped one), offline.
Secrets never sit in the file: a backend's API key is read from the environment variable the file names.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError
from ..yamlconf import parse_yaml_model

__all__ = ["DEFAULT_MODEL", "ApiKey", "Limits", "ModelRoute", "ProxyConfig", "hash_key", "load_config", "new_key"]

DEFAULT_MODEL = "smollm2-135m"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def new_key() -> str:
    """A fresh API key: 32 random bytes, URL-safe (a high-entropy token, so a plain SHA-256 is the right hash)."""
    return "gr-" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRoute(_Strict):
    backend: str = Field("embedded", description="'embedded' (the llama.cpp model) or a litellm model string: "
                                                 "hosted_vllm/NAME, openai/NAME, ...")
    api_base: str | None = Field(None, description="the backend's OpenAI-compatible base URL (…/v1)")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the backend's key")
    policy: str = Field("default", description="the policy when a request chooses none")
    policies: list[str] = Field(default_factory=list, description="policies a request may choose (plus `policy`)")
    domain: str | None = Field(None, description="baseline name both sides use when a request chooses none "
                                                 "(None: the policy's own)")
    domains: list[str] = Field(default_factory=list, description="domains a request may choose")
    client: Literal["auto", "httpx", "litellm"] = Field(
        "auto", description="how to reach a non-embedded backend: httpx (one shared client, pass-through; an "
                            "OpenAI-compatible api_base), litellm (any provider it knows), auto: httpx when api_base "
                            "is set")
    timeout_s: float = Field(120.0, gt=0, description="backend timeout (HTTP 504 past it)")
    default_temperature: float = Field(0.0, ge=0.0, le=2.0, description="when a request sets none (0: greedy, "
                                       "a regime the embedded model's own-generation baseline was fitted for)")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("the name of an environment variable (the key itself never goes in the file)")
        return v

    @field_validator("backend")
    @classmethod
    def _backend_name(cls, v: str) -> str:
        if v != "embedded" and "/" not in v:
            raise ValueError(f"'embedded' or a litellm model string like hosted_vllm/NAME (got {v!r})")
        return v

    @model_validator(mode="after")
    def _backend(self) -> ModelRoute:
        if self.backend.startswith("hosted_vllm/") and not self.api_base:
            raise ValueError("a hosted_vllm backend needs api_base (the server's …/v1 URL)")
        return self

    def allowed_policies(self) -> list[str]:
        return [self.policy, *[p for p in self.policies if p != self.policy]]

    def allowed_domains(self) -> list[str | None]:
        return [self.domain, *[d for d in self.domains if d != self.domain]]


class ApiKey(_Strict):
    name: str = Field(min_length=1, description="who holds it (logged instead of the key)")
    sha256: str = Field(description="hex SHA-256 of the key (guardrail keys new)")
    models: list[str] = Field(default_factory=lambda: ["*"], description="served models it may use ('*': all)")
    policies: list[str] = Field(default_factory=lambda: ["*"], description="policies it may choose ('*': all)")
    rate_per_minute: int | None = Field(None, ge=1, description="requests per minute (HTTP 429 past it)")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _SHA256.match(v):
            raise ValueError("64 lowercase hex digits: the key's SHA-256 (guardrail keys new prints it)")
        return v

    def may(self, model: str, policy: str) -> bool:
        return ("*" in self.models or model in self.models) and ("*" in self.policies or policy in self.policies)


class Limits(_Strict):
    max_body_bytes: int = Field(1_000_000, ge=1024, description="HTTP 413 past it")
    max_prompt_chars: int = Field(32_000, ge=1, description="all message contents together (HTTP 400 past it)")
    max_tokens: int = Field(1024, ge=1, description="largest max_tokens a request may ask for (HTTP 400 past it)")
    default_max_tokens: int = Field(256, ge=1)
    max_in_flight: int = Field(64, ge=1, description="requests handled at once per model; more wait ...")
    max_waiting: int = Field(64, ge=0, description="... up to this many; past it HTTP 429 with Retry-After")
    drain_s: float = Field(30.0, ge=0, description="on SIGTERM: how long in-flight requests may finish")
    reply_sessions: int = Field(8, ge=0, le=31, description="remote streams the embedded scorer judges at "
                                "checkpoints (stream.embedded_every) at once without re-decoding their answers")


def _default_route() -> ModelRoute:
    """No config: the embedded model, policy default, and every shipped policy a request may choose."""
    from ..guard.policy import shipped_policies

    return ModelRoute(policies=sorted(shipped_policies()))


class ProxyConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    models: dict[str, ModelRoute] = Field(default_factory=lambda: {DEFAULT_MODEL: _default_route()}, min_length=1)
    keys: list[ApiKey] = Field(default_factory=list, description="none: no authentication")
    cors_origins: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    baselines_dir: str | None = Field(None, description="a directory of your own baselines (guardrail baseline "
                                                        "fit), usable by name in policies and domains")
    log_content: bool = Field(False, description="log prompts and outputs (off: only ids, actions, timings)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _unique_keys(self) -> ProxyConfig:
        seen: set[str] = set()
        for k in self.keys:
            if k.sha256 in seen:
                raise ValueError(f"keys: the same key hash twice ({k.name})")
            seen.add(k.sha256)
        return self


def load_config(path: str | Path | None = None) -> ProxyConfig:
    """The config in ``path``, or the default one (embedded model, ``default`` policy)."""
    if path is None:
        return ProxyConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({getattr(e, 'strerror', None) or e})") from None
    cfg, _ = parse_yaml_model(text, str(p), ProxyConfig, what="a proxy config")
    return cfg
