"""Bearer keys (stored as SHA-256 hashes: they are random high-entropy tokens) and a per-key rate limit."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .config import ApiKey, hash_key
from .errors import ProxyError

__all__ = ["KeyRing"]


class KeyRing:
    def __init__(self, keys: list[ApiKey], clock: Callable[[], float] = time.monotonic) -> None:
        self._by_hash = {k.sha256: k for k in keys}
        self._hits: dict[str, deque[float]] = {}
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self._by_hash)

    def authenticate(self, authorization: str | None) -> ApiKey | None:
        """The key behind an ``Authorization: Bearer`` header (None when the server has no keys); 401 else."""
        if not self._by_hash:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProxyError(401, "missing API key: send Authorization: Bearer <key>", code="missing_api_key")
        key = self._by_hash.get(hash_key(token.strip()))
        if key is None:
            raise ProxyError(401, "incorrect API key", code="invalid_api_key")
        return key

    def authorize(self, key: ApiKey | None, model: str, policy: str) -> None:
        if key is not None and not key.may(model, policy):
            raise ProxyError(403, f"key {key.name!r} may not use model {model!r} with policy {policy!r}",
                             code="forbidden")

    def admit(self, key: ApiKey | None) -> None:
        """Count one request against the key's per-minute rate; 429 with Retry-After past it."""
        if key is None or key.rate_per_minute is None:
            return
        now = self._clock()
        hits = self._hits.setdefault(key.sha256, deque())
        while hits and now - hits[0] >= 60.0:
            hits.popleft()
        if len(hits) >= key.rate_per_minute:
            wait = max(1, int(60.0 - (now - hits[0])) + 1)
            raise ProxyError(429, f"rate limit of {key.rate_per_minute} requests per minute reached for key "
                                  f"{key.name!r}", code="rate_limit_exceeded", headers={"retry-after": str(wait)})
        hits.append(now)
