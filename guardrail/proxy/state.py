"""What the running proxy holds: one backend per served model, one embedded scorer shared by all, one Guard
per (model, policy, domain) a request may choose, and the admission limit per model.

Everything is built once, in the background after start-up (``/readyz`` says 503 until it is done), so that a
config error or a missing model stops the server at once with the file, line and field, not at the first
request.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..backends.base import Backend
from ..baselines.model import Baseline
from ..errors import ConfigError
from ..guard.guard import Guard, resolve_baselines
from ..guard.policy import Policy, load_policy
from .config import ModelRoute, ProxyConfig
from .errors import ProxyError

__all__ = ["Admission", "ProxyState", "ServedModel"]

log = logging.getLogger("guardrail.proxy")


class Admission:
    """At most ``limit`` requests in flight and ``max_waiting`` waiting for a model; past that a 429 at once."""

    def __init__(self, limit: int, max_waiting: int) -> None:
        self._sem = asyncio.Semaphore(limit)
        self.limit, self.max_waiting = limit, max_waiting
        self.waiting = 0
        self.in_flight = 0

    async def __aenter__(self) -> None:
        if self._sem.locked() and self.waiting >= self.max_waiting:
            raise ProxyError(429, f"too many requests waiting ({self.waiting}); retry shortly", code="queue_full",
                             headers={"retry-after": "1"})
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        self.in_flight -= 1
        self._sem.release()


@dataclass
class ServedModel:
    name: str
    route: ModelRoute
    backend: Backend
    guards: dict[tuple[str, str | None], Guard] = field(default_factory=dict)
    admission: Admission | None = None

    def guard(self, policy: str | None, domain: str | None) -> Guard:
        pol = policy or self.route.policy
        dom = domain if domain is not None else self.route.domain
        if pol not in self.route.allowed_policies():
            raise ProxyError(400, f"policy {pol!r} is not offered for model {self.name!r}; choose one of "
                                  f"{', '.join(self.route.allowed_policies())}", param="guardrail.policy",
                             code="policy_not_allowed")
        if dom not in self.route.allowed_domains():
            offered = [d for d in self.route.allowed_domains() if d is not None]
            raise ProxyError(400, f"domain {dom!r} is not offered for model {self.name!r}"
                                  f"{'; choose one of ' + ', '.join(offered) if offered else ''}",
                             param="guardrail.domain", code="domain_not_allowed")
        return self.guards[(pol, dom)]


class ProxyState:
    def __init__(self, config: ProxyConfig, *, backends: Mapping[str, Backend] | None = None,
                 scorer_factory: Callable[[], Backend] | None = None) -> None:
        """``backends``: served name -> backend, given (tests, the library); the rest are made from the config.
        ``scorer_factory``: the embedded scorer (default: the llama.cpp model, loaded once)."""
        self.config = config
        self._given = dict(backends or {})
        self._scorer_factory = scorer_factory
        self.scorer: Backend | None = None
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        self.error: str | None = None

    def _embedded(self) -> Backend:
        if self.scorer is None:
            if self._scorer_factory is not None:
                self.scorer = self._scorer_factory()
            else:
                from ..backends.llamacpp import LlamaCppBackend

                lim = self.config.limits
                self.scorer = LlamaCppBackend(max_waiting=lim.max_waiting, reply_sessions=lim.reply_sessions)
        return self.scorer

    def _backend(self, name: str, route: ModelRoute) -> Backend:
        if name in self._given:
            return self._given[name]
        if route.backend == "embedded":
            return self._embedded()
        key = None
        if route.api_key_env:
            key = os.environ.get(route.api_key_env)
            if key is None:
                raise ConfigError(f"models.{name}.api_key_env: the environment variable {route.api_key_env} is "
                                  f"not set")
        if route.client == "httpx" or (route.client == "auto" and route.api_base):
            if not route.api_base:
                raise ConfigError(f"models.{name}: client httpx needs api_base (an OpenAI-compatible …/v1 URL)")
            from ..backends.openai_http import OpenAIHTTPBackend

            return OpenAIHTTPBackend(route.api_base, route.backend.partition("/")[2], api_key=key,
                                     timeout=route.timeout_s, echo_scoring=route.backend.startswith("hosted_vllm/"))
        from ..backends.litellm import LiteLLMBackend

        return LiteLLMBackend(route.backend, api_base=route.api_base, api_key=key, timeout=route.timeout_s)

    def build(self) -> None:
        """Load the backends, the scorer and every Guard a request may choose (blocking: run off the loop)."""
        if self.config.baselines_dir:
            from ..baselines.registry import add_dir

            try:
                add_dir(self.config.baselines_dir)
            except ConfigError as e:
                raise ConfigError(f"baselines_dir: {e}") from None
        policies: dict[str, Policy] = {}
        for name, route in self.config.models.items():
            backend = self._backend(name, route)
            served = ServedModel(name, route, backend, admission=Admission(self.config.limits.max_in_flight,
                                                                           self.config.limits.max_waiting))
            for pname in route.allowed_policies():
                if pname not in policies:
                    try:
                        policies[pname] = load_policy(pname)
                    except ConfigError as e:
                        raise ConfigError(f"models.{name}.policies: {e}") from None
                for dom in route.allowed_domains():
                    try:
                        pol = policies[pname].with_baseline(dom)
                        bs = resolve_baselines(pol)  # loaded once: the Guard is given them
                        served.guards[(pname, dom)] = Guard(pol, backend, scorer=self._scorer_for(backend, bs),
                                                            baselines=bs)
                    except ConfigError as e:
                        raise ConfigError(f"models.{name} (policy {pname}"
                                          f"{', domain ' + dom if dom else ''}): {e}") from None
            self.models[name] = served
        self.ready = True

    def _scorer_for(self, backend: Backend, baselines: Mapping[str, Baseline]) -> Backend | None:
        """The embedded scorer, when a side's baseline is not for the serving backend's own logprobs (it then
        teacher-forces that side); None when the backend judges itself (nothing else is loaded)."""
        if hasattr(backend, "score_reply"):
            return backend
        own = all(b.scorer_id == backend.scorer.id for b in baselines.values())
        return None if own else self._embedded()

    def served(self, model: str) -> ServedModel:
        if not self.ready:
            raise ProxyError(503, self.error or "starting: the models are still loading", code="not_ready",
                             headers={"retry-after": "2"})
        m = self.models.get(model)
        if m is None:
            raise ProxyError(404, f"The model {model!r} does not exist on this server; served: "
                                  f"{', '.join(self.config.models)}", param="model", code="model_not_found")
        return m

    async def aclose(self) -> None:
        if self.config.baselines_dir:  # registered process-wide while this proxy runs
            from ..baselines.registry import remove_dir

            remove_dir(self.config.baselines_dir)
        closed: set[int] = set()
        for b in [*(m.backend for m in self.models.values()), self.scorer]:
            if b is not None and id(b) not in closed:
                closed.add(id(b))
                try:
                    await b.aclose()
                except Exception:  # closing must not hide the shutdown's cause
                    log.exception("closing a backend failed")
