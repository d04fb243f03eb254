"""The proxy in front of a real OpenAI-compatible server: llama-cpp-python's (started by the session's
``llamacpp_server`` fixture on 127.0.0.1), reached over httpx, with the real embedded scorer judging both sides
(the shipped baselines are for it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from proxy_helpers import gcg_rejected_and_stream_text, running

from guardrail.proxy import ProxyConfig, create_app
from guardrail.proxy.config import ModelRoute

pytestmark = pytest.mark.slow

GCG = json.loads((Path(__file__).parent / "data" / "attacks_gcg_sample.jsonl").read_text().splitlines()[0])


def test_guarded_chat_through_a_real_llamacpp_server(llamacpp_server):
    async def go():
        cfg = ProxyConfig(models={"llama": ModelRoute(backend="openai/smollm2", api_base=llamacpp_server,
                                                      timeout_s=180)})
        app = create_app(cfg)
        async with running(app, timeout=300) as c:
            r = await c.post("/v1/chat/completions", json={
                "model": "llama", "max_tokens": 24, "temperature": 0, "logprobs": True,
                "messages": [{"role": "user", "content": "What is the capital of France?"}]})
            assert r.status_code == 200, r.text
            body = r.json()
            g = body["guardrail"]
            assert g["scorers"] == {"prompt": "embedded", "output": "embedded"}
            assert g["prompt"]["p_value"] > 0.01 and g["attempts"][0]["output"]["p_value"] is not None
            text = body["choices"][0]["message"]["content"]
            assert "Paris" in text
            lp = body["choices"][0]["logprobs"]["content"]  # the server's own, as the client asked
            assert lp and all(e["logprob"] <= 0 for e in lp)
            assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0

            await gcg_rejected_and_stream_text(c, "llama", GCG["prompt"])
    asyncio.run(go())
