"""The proxy in front of a real OpenAI-compatible server: llama-cpp-python's (started by the session's
``llamacpp_server`` fixture on 127.0.0.1), reached over httpx, with the real embedded scorer judging both sides
(the shipped baselines are for it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from proxy_helpers import fit_inputs, gcg_rejected_and_stream_text, running

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
            # what the server's model answers is its own business (llama-cpp-python 0.3.36's greedy answer to this
            # question is not "Paris"; the release the tests ran on before answered it): the server's answer and its
            # logprobs come back, one a token
            assert isinstance(text, str) and text.strip()
            lp = body["choices"][0]["logprobs"]["content"]  # the server's own, as the client asked
            assert lp and all(e["logprob"] <= 0 for e in lp)
            assert len(lp) == body["usage"]["completion_tokens"]
            assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0

            await gcg_rejected_and_stream_text(c, "llama", GCG["prompt"])
    asyncio.run(go())


def test_output_baseline_fitted_through_llamacpp_server_judges_its_own_logprobs(llamacpp_server, tmp_path):
    """`guardrail baseline fit --generate --backend openai/NAME --api-base …` against llama-cpp-python's server:
    an output baseline of that server's own answers and logprobs; the proxy judges the server's output with it
    and loads no embedded model (its prompt side is off: this server returns no prompt logprobs)."""
    from typer.testing import CliRunner

    from guardrail.cli import app as cli

    data, bdir = fit_inputs(tmp_path)
    out = bdir / "myllama.output.json"
    res = CliRunner().invoke(cli, ["baseline", "fit", "--data", str(data), "--domain", "myllama", "--out", str(out),
                                   "--generate", "--max-tokens", "12", "--temperature", "0.7", "--alpha", "0.1",
                                   "--backend", "openai/smollm2", "--api-base", llamacpp_server, "--json"])
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.output)
    assert fitted["baseline"].startswith("myllama/output@") and fitted["test_rates"]
    policy = tmp_path / "own.yaml"
    policy.write_text("name: own\nprompt:\n  enabled: false\n  tiers: [{p: 0.001, action: reject}]\n"
                      "output:\n  baseline: myllama\n  tiers: [{p: 0.1, action: annotate}]\n"
                      "regenerate: {max_attempts: 0}\n")

    async def go():
        cfg = ProxyConfig(models={"llama": ModelRoute(backend="openai/smollm2", api_base=llamacpp_server,
                                                      policy=str(policy), timeout_s=180)}, baselines_dir=str(bdir))
        app = create_app(cfg)
        async with running(app, timeout=300) as c:
            assert app.state.guardrail.scorer is None  # the server's own logprobs judge its output
            r = await c.post("/v1/chat/completions", json={
                "model": "llama", "max_tokens": 16, "temperature": 0.7, "seed": 3,
                "messages": [{"role": "user", "content": "Give me a tip for keeping houseplants healthy."}]})
            assert r.status_code == 200, r.text
            g = r.json()["guardrail"]
            assert g["scorers"] == {"output": "serving"} and g["baselines"]["output"] == fitted["baseline"]
            out_d = g["attempts"][0]["output"]
            assert out_d["p_value"] is not None and out_d["verdicts"][0]["scorable"]
            assert out_d["verdicts"][0]["scorer_kind"] == "serving"
    asyncio.run(go())
