"""Property-based fuzzing of the chat route: generated request bodies (valid, half-valid and junk) against the
app with a backend that always answers; the property is that nothing is ever a 5xx and every error is
OpenAI's shape."""

from __future__ import annotations

import asyncio
import json

import httpx
from guard_helpers import benign, embedded_scorer, generation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_helpers import MODEL, config

from guardrail.backends.base import BackendBase, Capabilities
from guardrail.proxy import create_app
from guardrail.types import LogprobMode, Side


class AlwaysBackend(BackendBase):
    """Answers every call with a plausible benign segment (no script to run out of)."""

    def __init__(self) -> None:
        self._scorer = embedded_scorer()
        self._caps = Capabilities(prompt_logprobs=True, output_logprobs=True, max_top_k=20,
                                  logprob_mode=LogprobMode.RAW, tokenizer=self._scorer.tokenizer)
        self.n = 0

    async def score(self, text, *, side=Side.TEXT):
        self.n += 1
        return benign(30, seed=self.n)

    async def score_many(self, texts, *, side=Side.TEXT):
        return [await self.score(t, side=side) for t in texts]

    async def generate(self, request):
        self.n += 1
        return generation(benign(min(request.max_tokens, 40), seed=self.n, side=Side.OUTPUT))

    async def aclose(self):
        pass


junk = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True)
                    | st.text(max_size=20), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                              max_size=3), max_leaves=8)
content = st.one_of(st.text(max_size=60), junk,
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]),
                                                    "text": st.text(max_size=20) | junk}), max_size=3))
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "bad"]) | junk},
                                optional={"content": content, "name": st.text(max_size=5)})
fields = {
    "model": st.sampled_from([MODEL, "other"]) | junk,
    "messages": st.lists(message, max_size=3) | junk,
    "max_tokens": st.integers(-5, 5000) | junk, "temperature": st.floats(-1, 3) | junk,
    "top_p": st.floats(-0.5, 1.5) | junk, "seed": st.integers(-2**40, 2**40) | junk,
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | junk,
    "stream": st.booleans() | junk, "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | junk,
    "logprobs": st.booleans() | junk, "top_logprobs": st.integers(-2, 30) | junk, "n": st.integers(0, 3) | junk,
    "tools": junk, "response_format": junk, "user": st.text(max_size=5) | junk,
    "guardrail": st.fixed_dictionaries({}, optional={"policy": st.sampled_from(["default", "strict", "nope"]) | junk,
                                                     "domain": st.sampled_from(["general_wiki", "x"]) | junk}) | junk,
}
rest = {k: v for k, v in fields.items() if k not in ("model", "messages")}
bodies = st.fixed_dictionaries({"model": st.just(MODEL), "messages": st.lists(message, min_size=1, max_size=2)},
                               optional=rest) | st.fixed_dictionaries({}, optional=fields) | junk


def test_no_generated_request_gets_a_5xx():
    loop = asyncio.new_event_loop()
    app = create_app(config(), backends={MODEL: AlwaysBackend()})
    life = app.router.lifespan_context(app)
    loop.run_until_complete(life.__aenter__())
    loop.run_until_complete(app.state.loaded.wait())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy")
    statuses: dict[int, int] = {}

    @settings(max_examples=1200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=bodies, raw=st.booleans())
    def check(body, raw):
        data = json.dumps(body, allow_nan=True).encode() if raw else None
        r = loop.run_until_complete(client.post("/v1/chat/completions", content=data) if raw else
                                    client.post("/v1/chat/completions", json=_finite(body)))
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)

    try:
        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(life.__aexit__(None, None, None))
        loop.close()
    assert sum(statuses.values()) >= 1000
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 100, statuses  # both paths were exercised


def _finite(x):
    """httpx's json= refuses NaN; the raw branch sends it."""
    if isinstance(x, float) and (x != x or abs(x) == float("inf")):
        return None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x
